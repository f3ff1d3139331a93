"""Autograding speed: sequential ``nbgrader autograde`` against the grading pipeline.

    python benchmarks/autograde_speed.py [--n 200] [--assignment ch03_convolution] [--workers N]

Generates ``n`` submissions of one torch-using assignment: correct (the reference),
partly correct (the reference with one of the assignment's mutants), unanswered,
broken (5%: files that are not valid notebooks) and cheating (``tools/cheats.py``),
and grades the same set twice in this one run, in two scratch courses:

* **sequential**: nbgrader's own ``Execute`` step, one ``nbgrader autograde`` batch
  (rerun for the students a broken notebook kept it from reaching, as an instructor
  would have to);
* **pipeline**: ``python -m grading autograde`` (pre-flight, sandbox, tests outside
  the student's process, ``--workers`` processes).

The last line printed is JSON: ``n``, ``sequential_s``, ``pipeline_s``, ``speedup``,
``grades_identical_on_honest``, ``cheats_caught``, ``cheats_total``, and more.
The cheats that exhaust memory or fork are left out of the batch, because the
sequential grader would run them unconfined on this machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tools"), str(REPO)]

from cheats import for_assignment  # noqa: E402

import harness  # noqa: E402
from grading import scan  # noqa: E402

# Cheats that the sequential baseline would run unconfined on this machine: memory, processes,
# signals to PID 1, writes to the kernel's sockets. They are graded by tests/test_grading_integrity.py.
UNSAFE_FOR_THE_BASELINE = {"huge-memory", "fork-bomb", "infinite-loop", "fork-server-attacked",
                           "leftovers-for-the-next-student", "pickle-reply", "static-findings-erased-by-a-bad-reply"}
STOCK_PREPROCESSORS = """
# The baseline: nbgrader's own autograde steps, its Execute included
from nbgrader.converters import Autograde
c.Autograde.autograde_preprocessors = Autograde.class_traits()["autograde_preprocessors"].default()
c.Execute.timeout = 60
"""
SAME_LIMIT = "c.IsolatedExecute.cell_seconds = 60  # the baseline's Execute.timeout\n"


def make_submissions(assignment: str, n: int) -> dict[str, tuple[str, bytes]]:
    """student id -> (kind, notebook bytes); kinds: correct, partial, blank, broken, cheat:<name>.

    A mutant that uses a library operation its exercise forbids (``integrity.toml``) is
    not an honest partial answer: it is the ``forbidden-op`` cheat, with its own check.
    """
    scratch = Path(tempfile.mkdtemp(prefix="bench-release-"))
    course = harness.make_course(scratch, assignment)
    release = harness.generate_release(course, assignment)
    (path,) = sorted(release.glob("*.ipynb"))
    release_nb = nbformat.read(path, as_version=4)
    mutants = harness.load_mutants(assignment)
    variants = harness.variant_codes(assignment, mutants)
    reference = variants[harness.REFERENCE][path.name]
    cheats = [c for c in for_assignment(assignment)
              if c.name not in UNSAFE_FOR_THE_BASELINE and c.plant is None and c.graded]
    counts = {"broken": max(1, n // 20), "cheat": max(n * 3 // 20, min(len(cheats), n // 4)), "blank": n * 3 // 20}
    counts["partial"] = n // 4
    counts["correct"] = n - sum(counts.values())
    out: dict[str, tuple[str, bytes]] = {}

    def add(kind: str, index: int, nb_or_bytes) -> None:
        data = nb_or_bytes if isinstance(nb_or_bytes, bytes) else nbformat.writes(nb_or_bytes).encode()
        prefix = kind.split(":")[0]
        out[f"{prefix}-{sum(1 for k in out if k.startswith(prefix + '-')):03d}"] = (kind, data)

    for i in range(counts["correct"]):
        add("correct", i, harness.submission(release_nb, reference))
    rules = scan.load_rules(harness.SOLUTIONS / assignment)
    for i in range(counts["partial"]):
        mutant = mutants[i % len(mutants)]
        codes = variants[harness.MUTANT_PREFIX + mutant.name][path.name]
        forbidden = scan.forbidden_uses(rules, [(mutant.cell, codes[mutant.cell])]) if rules else {}
        add("cheat:forbidden-op" if forbidden else "partial", i, harness.submission(release_nb, codes))
    for i in range(counts["blank"]):
        add("blank", i, release_nb)
    broken = [b"", b'{"cells": [', b"\x89PNG\r\n\x1a\n not a notebook", b'{"nbformat": 4, "cells": "oops"}']
    for i in range(counts["broken"]):
        add("broken", i, broken[i % len(broken)])
    for i in range(counts["cheat"]):
        cheat = cheats[i % len(cheats)]
        add(f"cheat:{cheat.name}", i, cheat.apply(copy.deepcopy(release_nb)))
    return out, path.name


def make_course(root: Path, assignment: str, submissions, notebook: str, stock: bool) -> Path:
    course = harness.make_course(root, assignment)
    with (course / "nbgrader_config.py").open("a") as config:
        config.write(STOCK_PREPROCESSORS if stock else SAME_LIMIT)
    harness.generate_release(course, assignment)
    for student, (_, data) in submissions.items():
        folder = course / "submitted" / student / assignment
        folder.mkdir(parents=True, exist_ok=True)
        (folder / notebook).write_bytes(data)
    return course


def grade_sequential(course: Path, assignment: str, students: list[str]) -> float:
    started = time.monotonic()
    harness.nbgrader(course, "autograde", assignment, "--create", "--force", timeout=7200)
    missing = [s for s in students if s not in harness.read_scores(course, assignment, students)]
    for student in missing:  # what an instructor does when a notebook stopped the batch
        harness.nbgrader(course, "autograde", assignment, "--create", "--force", f"--student={student}")
    return time.monotonic() - started


def grade_pipeline(course: Path, assignment: str, workers: int) -> tuple[float, str]:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "grading", "--course", str(course), "autograde", assignment,
                           "--workers", str(workers)], cwd=REPO, capture_output=True, text=True)
    return time.monotonic() - started, proc.stdout[-2000:] + proc.stderr[-2000:]


def auto_scores(course: Path, assignment: str, students: list[str]) -> dict[str, dict[str, float]]:
    """Each student's autograded points per cell (a cheat may have written manual scores over them)."""
    from nbgrader.api import Gradebook, MissingEntry

    result = {}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", harness.course_id()) as gradebook:
        for student in students:
            try:
                submission = gradebook.find_submission(assignment, student)
            except MissingEntry:
                continue
            result[student] = {g.name: g.auto_score for nb in submission.notebooks for g in nb.grades}
    return result


def total(points: dict[str, float | None]) -> float:
    """Autograded points of a submission (a cell nbgrader could not grade counts 0)."""
    return sum(v or 0 for v in points.values())


def caught_by_score(kind: str, result, blank_score: float) -> bool:
    """A cheat is defeated when it scores no more than an unanswered notebook; a forbidden
    library operation, when the tests of the exercise that uses it score 0."""
    if kind.startswith("cheat:forbidden-op"):
        return result.cells.get("test_conv2d_naive", 0) == 0 or result.cells.get("test_conv2d_im2col", 0) == 0
    return result.score <= blank_score


def flagged_students(course: Path, assignment: str) -> set[str]:
    import csv

    path = course / "integrity" / assignment / "report.csv"
    with path.open() as handle:
        return {row["student"] for row in csv.DictReader(handle)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--assignment", default="ch03_convolution")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--keep", action="store_true", help="keep the scratch courses (their paths are printed)")
    parser.add_argument("--out", type=Path, help="also write the JSON result to this file")
    args = parser.parse_args(argv)

    submissions, notebook = make_submissions(args.assignment, args.n)
    students = sorted(submissions)
    kinds = {s: k for s, (k, _) in submissions.items()}
    root = Path(tempfile.mkdtemp(prefix="bench-autograde-"))
    stock = make_course(root / "sequential", args.assignment, submissions, notebook, stock=True)
    piped = make_course(root / "pipeline", args.assignment, submissions, notebook, stock=False)
    print(f"{len(students)} submissions: " + ", ".join(
        f"{k} {sum(1 for v in kinds.values() if v.split(':')[0] == k)}"
        for k in ("correct", "partial", "blank", "broken", "cheat")), flush=True)

    sequential_s = grade_sequential(stock, args.assignment, students)
    print(f"sequential nbgrader autograde: {sequential_s:.1f} s", flush=True)
    pipeline_s, log = grade_pipeline(piped, args.assignment, args.workers)
    print(f"pipeline, {args.workers} workers: {pipeline_s:.1f} s\n{log.strip()[-800:]}", flush=True)

    before = harness.read_scores(stock, args.assignment, students)
    after = harness.read_scores(piped, args.assignment, students)
    honest = [s for s in students if kinds[s] in ("correct", "partial", "blank")]
    auto_before, auto_after = (auto_scores(c, args.assignment, students) for c in (stock, piped))
    differ = [s for s in honest if s not in auto_before or auto_before.get(s) != auto_after.get(s)]
    blank_score = max(after[s].score for s in students if kinds[s] == "blank")
    flagged = flagged_students(piped, args.assignment)
    cheaters = [s for s in students if kinds[s].startswith("cheat:")]
    caught = [s for s in cheaters if s in after and s in flagged and caught_by_score(kinds[s], after[s], blank_score)]
    good_graded = all(s in after for s in students if kinds[s] != "broken")
    overwritten = sum(1 for s in honest if s in before and before[s].score != total(auto_before[s]))

    print("\nvector                          stock: autograded / shown   pipeline   flagged")
    first_of_each = {kinds[s]: s for s in reversed(cheaters)}
    for s in sorted(first_of_each.values()):
        b = (f"{total(auto_before[s]):g} / {before[s].score:g}" if s in before else "not graded")
        a = f"{after[s].score:g}/{after[s].max_score:g}" if s in after else "not graded"
        print(f"{kinds[s][6:]:32s}{b:>26s}  {a:>9s}   {'yes' if s in flagged else 'NO'}")
    print(f"stock: {overwritten} honest submissions show a score other than their autograded one "
          "(the gradebook-written cheat set manual scores)")
    for s in differ:
        print(f"honest grade differs: {s} ({kinds[s]}): stock {auto_before.get(s)} pipeline {auto_after.get(s)}")

    result = {
        "n": len(students),
        "assignment": args.assignment,
        "workers": args.workers,
        "device": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, no GPU",
        "sequential_s": round(sequential_s, 1),
        "pipeline_s": round(pipeline_s, 1),
        "speedup": round(sequential_s / pipeline_s, 2),
        "grades_identical_on_honest": not differ,
        "honest_compared": len(honest),
        "every_good_notebook_graded": good_graded,
        "broken": sum(1 for k in kinds.values() if k == "broken"),
        "cheats_caught": len(caught),
        "cheats_total": len(cheaters),
        "stock_honest_scores_overwritten_by_a_cheat": overwritten,
        "load_avg_1min_at_end": round(os.getloadavg()[0], 2),
    }
    if args.keep:
        print(f"scratch courses: {root}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
    return 0 if (not differ and good_graded and len(caught) == len(cheaters)) else 1


if __name__ == "__main__":
    sys.exit(main())
