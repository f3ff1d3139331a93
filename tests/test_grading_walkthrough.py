"""The README's and the book's grading walkthrough, run as written, on a scratch course."""

from __future__ import annotations

import csv
import os
import re
import shlex
import subprocess
import sys

import pytest

import harness

README = harness.REPO / "README.md"
BOOK_PAGE = harness.REPO / "book" / "how_to_use.md"
ASSIGNMENT = "ch01_perceptron"


def walkthrough_commands(text: str, after: str) -> list[str]:
    """The commands of the first bash block after ``after``, without comments."""
    block = re.search(re.escape(after) + r".*?```bash\n(.*?)```", text, re.S)
    assert block, f"no bash block after {after!r}"
    return [line.split("   #")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_the_book_shows_the_readme_walkthrough():
    readme = walkthrough_commands(README.read_text(), "<!-- walkthrough")
    book = walkthrough_commands(BOOK_PAGE.read_text(), "### Grading a batch of submissions")
    assert book == readme


@pytest.fixture(scope="module")
def walked(tmp_path_factory):
    work = tmp_path_factory.mktemp("walkthrough")
    course = harness.make_course(work / "course", ASSIGNMENT)
    # the README runs these from the repository root; here they run in a scratch folder
    # (for example.zip and grades.csv), with the repository importable as from its root
    env = {**os.environ, "PYTHONPATH": str(harness.REPO)}
    runs = []
    for command in walkthrough_commands(README.read_text(), "<!-- walkthrough"):
        argv = shlex.split(command)
        assert argv[0] == "python"
        argv[0] = sys.executable
        if argv[1] == "-m" and argv[2] == "grading":
            argv[3:3] = ["--course", str(course)]  # the scratch course, not the repository
        else:
            argv[1] = str(harness.REPO / argv[1])
        proc = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=900)
        runs.append((command, proc))
    return {"work": work, "course": course, "runs": runs}


def test_every_step_succeeds(walked):
    for command, proc in walked["runs"]:
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"


def test_the_grades_are_what_each_example_student_deserves(walked):
    with (walked["work"] / "grades.csv").open() as handle:
        rows = {row["student_id"]: row for row in csv.DictReader(handle)}
    assert {s: float(r["raw_score"]) for s, r in rows.items()} == {"doejane": 20.0, "smithjohn": 6.0, "leeann": 0.0}
    assert "renamed-notebook" in rows["leeann"]["integrity_vectors"]


def test_the_web_page_is_quarantined_with_its_reason(walked):
    (reason,) = (walked["course"] / "quarantine" / ASSIGNMENT).glob("*/reason.txt")
    assert "brownbob" in str(reason) and "HTML" in reason.read_text()


def test_feedback_and_report_are_written(walked):
    feedback = sorted(p.parts[-3] for p in (walked["course"] / "feedback").glob(f"*/{ASSIGNMENT}/*.html"))
    assert feedback == ["doejane", "leeann", "smithjohn"]
    report = (walked["course"] / "integrity" / ASSIGNMENT / "report.html").read_text()
    assert "leeann" in report and "renamed" in report
