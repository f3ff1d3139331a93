"""Train the book's source model once and write the checkpoint that ships with dlvision.

    python tools/train_source_model.py            # train (a few minutes on a 2-core CPU), write the file
    python tools/train_source_model.py --check    # load the shipped file and score it again, no training

The recipe (data, architecture, optimiser, epochs, seed) is ``SOURCE_RECIPE`` in
``lib/dlvision/models/source.py``; the checkpoint is ``lib/dlvision/models/source_model.pt``:
the weights and the metadata (classes, normalisation, test accuracy, training time, the
recipe, the torch version). ``dlvision.models.source_model()`` loads it. Why a shipped file
rather than training at first use: the book builds cold in minutes, and every reader, test
and build gets the very same weights (a CPU's floating-point order can differ between
machines, so retraining elsewhere gives a model that is equally good, not identical).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lib"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="score the shipped checkpoint; do not train")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: the shipped file)")
    args = parser.parse_args(argv)

    import torch

    from dlvision.models import weights
    from dlvision.models.source import train_source_model

    out = args.out or weights.SOURCE_CHECKPOINT
    if args.check:
        facts = weights.check_source_checkpoint()
        print(json.dumps(facts, indent=1))
        return 0 if facts["matches"] else 1

    os.environ.setdefault("DLVISION_PROGRESS", "plain")
    model, meta = train_source_model(verbose=True)
    state = {"format": weights.SOURCE_FORMAT, "state_dict": model.state_dict(), "meta": meta}
    from dlvision.cache import atomic_path

    with atomic_path(out) as tmp:
        torch.save(state, tmp)
        tmp.chmod(0o644)  # a temporary file is private; the shipped one is readable by all
    print(json.dumps(meta, indent=1))
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
