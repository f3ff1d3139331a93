"""How long one student's notebook takes to autograde, for every assignment.

    python benchmarks/autograde_notebook.py [--out benchmarks/results/cpu-2core-autograde-notebook.json] [ch05_lenet ...]

For each assignment (default: all of ``solutions/``) it builds a scratch course with the
grader harness (``tools/harness.py``: the repository's ``nbgrader_config.py``, so the
grading pipeline's sandboxed ``Execute``), releases it, submits the reference solution as
one student, and times ``nbgrader autograde`` for that student alone: the whole command,
as an instructor would wait for it, start-up of nbgrader and of the sandbox included. The
score must be full marks (a time for a broken grading would say nothing). The course's
target is under a minute per notebook on a 2-core CPU, training included.

The last line printed is one JSON object: per assignment the seconds, the score and the
maximum, with the machine's load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

import harness  # noqa: E402


def time_reference(assignment: str) -> dict:
    """Seconds of ``nbgrader autograde`` on the reference solution alone, and its score."""
    with tempfile.TemporaryDirectory() as scratch:
        course = harness.make_course(Path(scratch), assignment)
        release = harness.generate_release(course, assignment)
        codes = harness.variant_codes(assignment, [])[harness.REFERENCE]
        folder = course / "submitted" / "student" / assignment
        folder.mkdir(parents=True)
        import nbformat

        for path in sorted(release.glob("*.ipynb")):
            nb = harness.submission(nbformat.read(path, as_version=4), codes.get(path.name, {}))
            nbformat.write(nb, folder / path.name)
        load = os.getloadavg()[0]
        start = time.perf_counter()
        harness.nbgrader(course, "autograde", assignment, "--create", "--force", "--student=student")
        seconds = time.perf_counter() - start
        result = harness.read_scores(course, assignment, ["student"])["student"]
    return {"seconds": round(seconds, 1), "score": result.score, "max_score": result.max_score,
            "load_avg_1min_before": round(load, 2), "load_avg_1min_after": round(os.getloadavg()[0], 2)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("assignments", nargs="*", help="default: every assignment of solutions/")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    results = {"device": f"{platform.machine()}, {os.cpu_count()} cores, no GPU", "python": platform.python_version(),
               "assignments": {}}
    for assignment in args.assignments or harness.assignments():
        rec = time_reference(assignment)
        results["assignments"][assignment] = rec
        print(f"{assignment:22s} {rec['seconds']:6.1f} s  {rec['score']:g}/{rec['max_score']:g}  "
              f"load {rec['load_avg_1min_before']} -> {rec['load_avg_1min_after']}", flush=True)
    line = json.dumps(results)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(line)
    full = all(r["score"] == r["max_score"] for r in results["assignments"].values())
    return 0 if full else 1


if __name__ == "__main__":
    sys.exit(main())
