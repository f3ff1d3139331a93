"""``python -m grading``: one command per grading step, each around nbgrader's own.

    python -m grading release   ch01_perceptron              # nbgrader generate_assignment
    python -m grading collect   ch01_perceptron downloads.zip --rule canvas
    python -m grading autograde ch01_perceptron --workers 2  # pre-flight, sandbox, parallel
    python -m grading feedback  ch01_perceptron              # HTML, hidden tests removed
    python -m grading export    grades.csv                   # nbgrader export + integrity columns
    python -m grading report    ch01_perceptron              # integrity report (CSV and HTML)

Every command takes ``--course DIR`` (default: the current folder when it has an
``nbgrader_config.py``, else this repository) and ``--db URL`` (default: the course's
gradebook; ``postgresql://...`` for workers on several hosts).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from tqdm import tqdm

from grading.config import course_root, default_db_url, load_course_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grading", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--course", type=Path, default=None, help="the course folder (with nbgrader_config.py)")
    parser.add_argument("--db", default=None, help="gradebook URL (default: the course's sqlite gradebook)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("release", help="generate the student version (nbgrader generate_assignment)").add_argument(
        "assignment")
    collect = commands.add_parser("collect", help="LMS zip or Colab folder -> submitted/, with pre-flight")
    collect.add_argument("assignment")
    collect.add_argument("source", type=Path, help="the LMS's zip of downloads, or a folder of .ipynb files")
    collect.add_argument("--rule", default="canvas",
                         help="file name -> student id: canvas, moodle, colab, folder, or a regex with (?P<student>...)")
    collect.add_argument("--roster", type=Path, help="CSV mapping what the rule extracts to student ids")
    autograde = commands.add_parser("autograde", help="pre-flight, then grade every submission in parallel")
    autograde.add_argument("assignment")
    autograde.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: cores)")
    autograde.add_argument("--student", action="append", help="grade only these students (repeatable)")
    autograde.add_argument("--force", action="store_true", help="grade again submissions already graded")
    autograde.add_argument("--skip-preflight", action="store_true",
                           help="for further hosts sharing the course folder: the first one did the pre-flight")
    feedback = commands.add_parser("feedback", help="HTML feedback for students, hidden tests removed")
    feedback.add_argument("assignment")
    feedback.add_argument("--student", action="append")
    commands.add_parser("export", help="a CSV of grades (nbgrader export, plus integrity columns)").add_argument(
        "out", type=Path)
    commands.add_parser("report", help="the integrity report: CSV and HTML").add_argument("assignment")
    args = parser.parse_args(argv)
    try:
        course = course_root(args.course)
    except FileNotFoundError as error:
        parser.error(str(error))
    return COMMANDS[args.command](args, course, args.db or default_db_url(course))


def cmd_release(args, course: Path, db_url: str) -> int:
    from grading.report import run_nbgrader

    try:
        run_nbgrader(course, "generate_assignment", args.assignment, "--force", db_url=db_url)
    except RuntimeError as error:
        print(error, file=sys.stderr)
        return 1
    print(f"released {args.assignment}: {release_dir(course, args.assignment)}, gradebook {db_url}")
    return 0


def cmd_collect(args, course: Path, db_url: str) -> int:
    from grading.collect import collect

    result = collect(args.source, course, args.assignment, rule=args.rule, roster=args.roster,
                     release_dir=release_dir(course, args.assignment))
    manifest = course / "collected" / args.assignment / "manifest.csv"
    result.write_manifest(manifest)
    print(f"collected {len(result.collected)}, quarantined {len(result.quarantined)}, skipped {len(result.skipped)}; "
          f"manifest: {manifest}")
    for row in result.quarantined:
        print(f"  quarantined {row.get('source')}: {row.get('reason')}")
    return 0


def cmd_autograde(args, course: Path, db_url: str) -> int:
    from nbgrader.api import Gradebook, MissingEntry

    from grading import workers
    from grading.collect import preflight_submitted
    from grading.report import write_integrity_report

    hint, release = f"run `python -m grading release {args.assignment}` first", release_dir(course, args.assignment)
    if not release.is_dir():
        known = sorted(p.name for p in release.parent.glob("*") if p.is_dir())
        print(f"no release of {args.assignment!r} in {release.parent} (has: {known}); {hint}", file=sys.stderr)
        return 2
    with Gradebook(db_url, load_course_config(course).CourseDirectory.get("course_id", "default_course")) as gradebook:
        try:
            gradebook.find_assignment(args.assignment)
        except MissingEntry:
            print(f"{args.assignment!r} is not in the gradebook {db_url}; {hint}", file=sys.stderr)
            return 2
    if not args.skip_preflight:
        for row in preflight_submitted(course, args.assignment, release).quarantined:
            print(f"quarantined {row.get('source')}: {row.get('reason')}")
    students = sorted(p.parent.name for p in (course / "submitted").glob(f"*/{args.assignment}")
                      if not p.is_symlink() and not p.parent.is_symlink() and any(p.glob("*.ipynb")))
    students = [s for s in students if not args.student or s in args.student]
    if not students:
        print(f"no submissions of {args.assignment} in {course / 'submitted'}")
        return 0
    if args.force:
        workers.reset_claims(db_url, args.assignment, args.student)
    limit = float(load_course_config(course).IsolatedExecute.get("notebook_seconds", 600))
    job = workers.Job(course, args.assignment, tuple(students), db_url, stale_seconds=2 * limit + 300)
    started = time.monotonic()
    with tqdm(total=len(students), unit="notebook", desc=f"autograde {args.assignment}") as bar:
        results = workers.run_workers(job, max(1, min(args.workers, len(students))), lambda _: bar.update())
    failed = [r for r in results if r[1] != "graded"]
    print(f"graded {len(results) - len(failed)} of {len(students)} submissions in {time.monotonic() - started:.1f} s "
          f"with {args.workers} workers" + ("" if len(results) == len(students) else f"; {len(students) - len(results)}"
                                            " were graded before (use --force to grade them again)"))
    for student, _, message, _ in failed:
        print(f"  FAILED {student}: {message.strip().splitlines()[-1] if message.strip() else '?'}")
    _, report = write_integrity_report(course, args.assignment, scores=scores(db_url, course, args.assignment))
    print(f"integrity report: {report}")
    return 1 if failed else 0


def cmd_feedback(args, course: Path, db_url: str) -> int:
    from grading.report import generate_feedback

    paths = generate_feedback(course, args.assignment, args.student, db_url=db_url)
    print(f"{len(paths)} feedback files under {course / 'feedback'}")
    return 0


def cmd_export(args, course: Path, db_url: str) -> int:
    from grading.report import export_grades

    print(export_grades(course, args.out, db_url=db_url))
    return 0


def cmd_report(args, course: Path, db_url: str) -> int:
    from grading.report import write_integrity_report

    for path in write_integrity_report(course, args.assignment, scores=scores(db_url, course, args.assignment)):
        print(path)
    return 0


COMMANDS = {"release": cmd_release, "collect": cmd_collect, "autograde": cmd_autograde, "feedback": cmd_feedback,
            "export": cmd_export, "report": cmd_report}


def release_dir(course: Path, assignment: str) -> Path:
    return course / load_course_config(course).CourseDirectory.get("release_directory", "release") / assignment


def scores(db_url: str, course: Path, assignment: str) -> dict[str, float]:
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(db_url, load_course_config(course).CourseDirectory.get("course_id", "default_course")) as gradebook:
        try:
            return {s.student_id: s.score for s in gradebook.assignment_submissions(assignment)}
        except MissingEntry:
            return {}


if __name__ == "__main__":
    sys.exit(main())
