"""Regenerate the student notebooks in ``exercises/`` from ``solutions/``.

    python tools/release.py              # every assignment
    python tools/release.py ch01_perceptron

Each assignment goes through nbgrader's own ``generate_assignment`` (solution
regions replaced by ``raise NotImplementedError()``, hidden tests removed, cells
locked and checksummed) in a scratch course, and the result replaces
``exercises/<assignment>/``. Release folders whose assignment no longer exists
are removed. ``tests/test_sync.py`` fails when ``exercises/`` is not what this
script writes.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402


def release(assignment: str) -> Path:
    with tempfile.TemporaryDirectory(prefix=f"release-{assignment}-") as tmp:
        course = harness.make_course(Path(tmp), assignment)
        generated = harness.generate_release(course, assignment)
        target = harness.EXERCISES / assignment
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(generated, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Regenerate exercises/ from solutions/ with nbgrader.")
    parser.add_argument("assignments", nargs="*", help="default: every assignment in solutions/")
    args = parser.parse_args(argv)
    known = harness.assignments()
    names = args.assignments or known
    unknown = sorted(set(names) - set(known))
    if unknown:
        parser.error(f"unknown assignment(s) {unknown}; the assignments in solutions/ are {known}")
    for name in names:
        print(f"released {name} -> {release(name).relative_to(harness.REPO)}")
    if not args.assignments and harness.EXERCISES.is_dir():
        for stale in sorted(p for p in harness.EXERCISES.iterdir() if p.is_dir() and p.name not in known):
            shutil.rmtree(stale)
            print(f"removed {stale.relative_to(harness.REPO)}: no such assignment in solutions/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
