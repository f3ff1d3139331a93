"""Run one exported page (``export_chapters.py``) cell by cell, as a notebook kernel would, and record it.

For machines without Jupyter (the GPU machine): the cells of the ``percent`` script run in
order in one namespace, each timed; a cell that raises ends the run (as in a book build),
except for cells tagged ``raises-exception``; cells tagged ``skip-execution`` are not run.
What the page needs from the book's tool chain is provided here when it is missing:
``myst_nb.glue`` records each glued value (they go into the JSON), and a minimal
``IPython.display``. Figures are drawn with matplotlib's Agg backend and closed after each
cell. When the dlvision cache holds stand-ins (``standins.py``), the CIFAR-10 checksum test
lets them through.

The JSON record (``--out``) is rewritten after every cell, so a run stopped by a time limit
still says how far it got and how long each cell took.

    DLVISION_PROFILE=full python benchmarks/run_chapter.py _build/gpu_check/chapters/ch05_lenet.py --out ch05.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import re
import sys
import time
import traceback
import types
from pathlib import Path

CELL = re.compile(r"^# %%(?P<rest>.*)$")
MAX_TAIL = 40  # lines of each cell's output kept in the record


def cells_of(text: str) -> list[dict]:
    """The code cells of a percent script: source, tags and the line where each starts."""
    cells, current = [], None
    for lineno, line in enumerate(text.splitlines(), 1):
        m = CELL.match(line)
        if m:
            rest = m.group("rest")
            if "[markdown]" in rest or "[md]" in rest:
                current = None
                continue
            tags = re.search(r'tags=(\[[^\]]*\])', rest)
            current = {"line": lineno, "tags": json.loads(tags.group(1)) if tags else [], "lines": []}
            cells.append(current)
        elif current is not None:
            current["lines"].append(line)
    for c in cells:
        c["source"] = "\n".join(c.pop("lines")).strip("\n")
    return [c for c in cells if c["source"].strip()]


def jsonable(value, depth=0):
    """A JSON-friendly copy of a glued value (numbers, strings, small containers; else a short repr)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value if not isinstance(value, str) else value[:500]
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    try:
        import numpy as np
        import torch

        if isinstance(value, (np.generic,)):
            return jsonable(value.item(), depth)
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            return jsonable(value.item(), depth)
    except ImportError:
        pass
    if isinstance(value, (list, tuple)) and depth < 2 and len(value) <= 20:
        return [jsonable(v, depth + 1) for v in value]
    return {"repr": repr(value)[:200], "type": type(value).__name__}


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


class _IPythonShim:
    """A meta-path finder that makes a minimal ``IPython`` and ``IPython.display`` on import.
    Only on import: libraries that look for IPython in ``sys.modules`` (matplotlib does) see
    none until a page imports it, and then see a version from which they ask nothing more."""

    def find_spec(self, name, path=None, target=None):
        import importlib.machinery

        if name in ("IPython", "IPython.display"):
            return importlib.machinery.ModuleSpec(name, self, is_package=name == "IPython")
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        if module.__name__ == "IPython":
            module.version_info = (8, 24, 0)
            module.get_ipython = lambda: None
            return

        def display(*objs, **kw):
            for o in objs:
                if type(o).__name__ != "Figure":
                    print(repr(o)[:1000])

        class _Rich:
            def __init__(self, data=None, *a, **k):
                self.data = data

            def __repr__(self):
                return str(self.data)[:1000]

        module.display = display
        module.Markdown = module.HTML = module.Latex = module.Math = module.Image = _Rich


def install_shims(glued: dict, force: bool = False) -> list[str]:
    """Provide myst_nb.glue and IPython.display where they are missing (or always, with ``force``:
    a dry run here imitates the GPU machine, which has neither); returns what was shimmed."""
    shimmed = []
    have_myst = not force and _importable("myst_nb")

    def glue(name, variable, display=True):
        glued[name] = jsonable(variable)

    if have_myst:
        import myst_nb

        myst_nb.glue = glue  # record, whatever myst_nb would do outside a build
    else:
        mod = types.ModuleType("myst_nb")
        mod.glue = glue
        sys.modules["myst_nb"] = mod
        shimmed.append("myst_nb")
    if force or not _importable("IPython.display"):
        for name in [n for n in sys.modules if n.split(".")[0] == "IPython"]:
            del sys.modules[name]  # an IPython imported earlier in this process would hide the shim
        if not any(isinstance(f, _IPythonShim) for f in sys.meta_path):
            sys.meta_path.insert(0, _IPythonShim())  # made only when a page imports IPython
        shimmed.append("IPython")
    return shimmed


class Tee(io.TextIOBase):
    """Write to the real stream and keep the text of the current cell."""

    def __init__(self, stream):
        self.stream, self.buffer = stream, []

    def write(self, s):
        self.stream.write(s)
        self.buffer.append(s)
        return len(s)

    def flush(self):
        self.stream.flush()

    def take(self) -> list[str]:
        lines = "".join(self.buffer).splitlines()
        self.buffer = []
        return lines[-MAX_TAIL:]


def run(script: Path, out: Path | None, *, max_cells: int | None = None, budget: float | None = None,
        force_shims: bool = False) -> dict:
    os.environ.setdefault("MPLBACKEND", "Agg")
    text = script.read_text()
    cells = cells_of(text)
    glued: dict = {}
    record = {
        "script": script.name,
        "profile": os.environ.get("DLVISION_PROFILE", "(automatic)"),
        "status": "running",
        "cells_total": len(cells),
        "cells_run": 0,
        "seconds": 0.0,
        "cells": [],
        "glued": glued,
    }
    record["shims"] = install_shims(glued, force=force_shims)
    cache = os.environ.get("DLVISION_CACHE")
    if cache and (Path(cache) / "STANDINS.json").exists():
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from standins import allow_standins

        allow_standins()
        record["standins"] = json.loads((Path(cache) / "STANDINS.json").read_text())

    def save():
        if out is not None:
            tmp = out.with_suffix(".tmp")
            tmp.write_text(json.dumps(record, indent=1) + "\n")
            tmp.replace(out)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    namespace = {"__name__": "__main__", "__file__": str(script)}
    t_start = time.perf_counter()
    stdout, stderr = sys.stdout, sys.stderr
    tee = Tee(stdout)
    record["status"] = "completed"
    for k, cell in enumerate(cells):
        if max_cells is not None and k >= max_cells:
            record["status"] = f"stopped after {max_cells} cells (--max-cells)"
            break
        if budget is not None and time.perf_counter() - t_start > budget:
            record["status"] = f"stopped: the budget of {budget:.0f} s was spent before cell {k + 1}"
            break
        first = next((ln for ln in cell["source"].splitlines() if ln.strip() and not ln.startswith("#")), "")
        entry = {"cell": k + 1, "line": cell["line"], "first_line": first[:100], "tags": cell["tags"]}
        if "skip-execution" in cell["tags"]:
            entry["status"] = "skipped (skip-execution)"
            record["cells"].append(entry)
            continue
        print(f"--- {script.stem} cell {k + 1}/{len(cells)} (line {cell['line']}): {first[:80]}", file=stderr, flush=True)
        t0 = time.perf_counter()
        sys.stdout = tee
        try:
            code = compile(cell["source"], f"{script.name}:cell{k + 1}:line{cell['line']}", "exec")
            with contextlib.redirect_stderr(stderr):
                exec(code, namespace)
            entry["status"] = "ok"
        except BaseException as exc:  # noqa: BLE001 - a page's error is the finding; record it
            entry["status"] = "error"
            entry["error"] = f"{type(exc).__name__}: {str(exc)[:2000]}"
            entry["traceback"] = traceback.format_exc().splitlines()[-25:]
            if isinstance(exc, KeyboardInterrupt) or "raises-exception" not in cell["tags"]:
                record["status"] = "error"
        finally:
            sys.stdout = stdout
            plt.close("all")
        entry["seconds"] = round(time.perf_counter() - t0, 3)
        entry["output_tail"] = tee.take()
        record["cells"].append(entry)
        record["cells_run"] = k + 1
        record["seconds"] = round(time.perf_counter() - t_start, 2)
        save()
        if record["status"] == "error":
            print(f"--- {script.stem} cell {k + 1} failed: {entry['error'][:300]}", file=stderr, flush=True)
            break
    record["seconds"] = round(time.perf_counter() - t_start, 2)
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            record["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    except ImportError:
        pass
    save()
    return record


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("scripts", type=Path, nargs="+", help="one page, or several run one after the other")
    p.add_argument("--out", type=Path, default=None, help="the record of one page")
    p.add_argument("--out-dir", type=Path, default=None, help="records of several pages: <dir>/<page>.json")
    p.add_argument("--max-cells", type=int, default=None, help="run only the first N cells")
    p.add_argument("--budget", type=float, default=None, help="start no cell after this many seconds")
    p.add_argument("--shims", action="store_true", help="use the shims even where myst_nb and IPython exist")
    args = p.parse_args(argv)
    if len(args.scripts) > 1 and args.out is not None:
        p.error("several pages: give --out-dir, not --out")
    lib = Path(__file__).resolve().parents[1] / "lib"
    if str(lib) not in sys.path:
        sys.path.insert(0, str(lib))
    ok = True
    for script in args.scripts:
        # Several pages in one process share imported modules (the dry run's imports-only check);
        # a page's own run on the GPU machine has a process to itself.
        out = args.out if args.out_dir is None else args.out_dir / f"{script.stem}.json"
        record = run(script, out, max_cells=args.max_cells, budget=args.budget, force_shims=args.shims)
        print(f"--- {script.stem}: {record['status']}, {record['cells_run']}/{record['cells_total']} cells, "
              f"{record['seconds']:.1f} s", file=sys.stderr)  # fmt: skip
        ok = ok and (record["status"] == "completed" or record["status"].startswith("stopped"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
