"""The adversarial-submission suite: every attack of ``tools/cheats.py``, through the real pipeline.

Three scratch courses (chapter 1, chapter 3 for the forbidden-operation rule, the fixture
``networks`` for modules) get the unanswered notebook, the reference, and every cheat of
their assignment applied to the unanswered notebook, **each followed by an honest student**
(the reference). ``python -m grading autograde`` grades each course with one worker, so
every honest student is graded right after a cheat, by the same worker and the same warm
sandbox. Each cheat must score no more than the unanswered notebook, its honest successor
must get full marks, every notebook must be graded (or, for the file-system attacks,
quarantined), and each cheat must appear in the integrity report under its vector. In the
chapter-1 course, honest partial answers and dying or hanging processes get exactly what
they deserve.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from cheats import CH03, MONKEYPATCH, NETWORKS, for_assignment

import harness

FIXTURES = Path(__file__).resolve().parent / "fixtures"
COURSES = {"ch01_perceptron": harness.SOLUTIONS, CH03: harness.SOLUTIONS, NETWORKS: FIXTURES}
SHORT_LIMITS = "c.IsolatedExecute.cell_seconds = 15\nc.IsolatedExecute.notebook_seconds = 90\n"


def _cheats(assignment: str) -> list:
    return [c for c in for_assignment(assignment) if c.assignment == assignment or assignment == "ch01_perceptron"]


def _ids(assignment: str) -> dict[str, tuple[str, str]]:
    """cheat name -> (the cheat's student id, the honest student's graded right after it)."""
    return {c.name: (f"{i:02d}-cheat-{c.name}", f"{i:02d}-honest-after-{c.name}")
            for i, c in enumerate(_cheats(assignment))}


def _write(course: Path, assignment: str, student: str, notebook: str, nb_or_bytes):
    folder = course / "submitted" / student / assignment
    folder.mkdir(parents=True, exist_ok=True)
    data = nb_or_bytes if isinstance(nb_or_bytes, bytes) else nbformat.writes(nb_or_bytes).encode()
    (folder / notebook).write_bytes(data)
    return folder


def _grade_course(root: Path, assignment: str, extra=None) -> dict:
    solutions = COURSES[assignment]
    course = harness.make_course(root, assignment, solutions)
    with (course / "nbgrader_config.py").open("a") as config:  # short limits: the loops end sooner
        config.write(SHORT_LIMITS)
    release = harness.generate_release(course, assignment)
    (path,) = sorted(release.glob("*.ipynb"))
    release_nb = nbformat.read(path, as_version=4)
    reference = harness.submission(release_nb, harness.reference_codes(solutions / assignment / path.name))
    _write(course, assignment, "honest-blank", path.name, release_nb)
    _write(course, assignment, "honest-reference", path.name, reference)
    for cheat in _cheats(assignment):
        student, honest = _ids(assignment)[cheat.name]
        data = cheat.apply(copy.deepcopy(release_nb))
        folder = _write(course, assignment, student, path.name, data)
        if cheat.plant is not None:
            (folder / path.name).unlink()
            cheat.plant(folder, course, data if isinstance(data, bytes) else nbformat.writes(data).encode())
        _write(course, assignment, honest, path.name, reference)
    if extra is not None:
        extra(course, release_nb, path.name)
    sources = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (course / "solutions").rglob("*.ipynb")}
    proc = subprocess.run([sys.executable, "-m", "grading", "--course", str(course), "autograde", assignment,
                           "--workers", "1"], cwd=harness.REPO, capture_output=True, text=True, timeout=3000)
    students = [p.name for p in (course / "submitted").iterdir()] + [s for pair in _ids(assignment).values()
                                                                      for s in pair]
    with (course / "integrity" / assignment / "report.csv").open() as handle:
        report = list(csv.DictReader(handle))
    return {"proc": proc, "scores": harness.read_scores(course, assignment, sorted(set(students))),
            "report": report, "course": course, "sources": sources, "assignment": assignment}


def _ch01_extras(course: Path, release_nb, notebook: str) -> None:
    """Honest partial answers, and answers before a process that dies or hangs."""
    reference = harness.reference_codes(harness.SOLUTIONS / "ch01_perceptron" / notebook)
    partial = harness.submission(release_nb, {"fit": reference["fit"]})
    _write(course, "ch01_perceptron", "honest-partial", notebook, partial)
    patched = copy.deepcopy(partial)
    patched.cells.append(nbformat.v4.new_code_cell(MONKEYPATCH))
    _write(course, "ch01_perceptron", "partial-plus-monkeypatch", notebook, patched)
    _write(course, "ch01_perceptron", "broken-file", notebook, b'{"cells": [ this is not json')
    _write(course, "ch01_perceptron", "fit-then-exit", notebook, harness.submission(
        release_nb, {"fit": reference["fit"], "margin": "import os\nos._exit(1)"}))
    _write(course, "ch01_perceptron", "fit-margin-then-loop", notebook, harness.submission(
        release_nb, {"fit": reference["fit"], "margin": reference["margin"], "bound": "while True:\n    pass"}))


class _Courses(dict):
    """Each course graded the first time a test asks for it (``-k`` can pick one course)."""

    def __init__(self, factory):
        super().__init__()
        self.factory = factory

    def __missing__(self, assignment: str) -> dict:
        extras = _ch01_extras if assignment == "ch01_perceptron" else None
        self[assignment] = _grade_course(self.factory.mktemp(assignment), assignment, extras)
        return self[assignment]


@pytest.fixture(scope="module")
def courses(tmp_path_factory) -> dict[str, dict]:
    return _Courses(tmp_path_factory)


def _vectors(graded, student):
    return {row["vector"] for row in graded["report"] if row["student"] == student}


@pytest.mark.parametrize("assignment", list(COURSES))
def test_the_batch_completes_and_the_source_is_untouched(courses, assignment):
    graded = courses[assignment]
    proc = graded["proc"]
    assert "Traceback" not in proc.stderr.split("autograde")[0], proc.stderr[-3000:]
    expected = {"honest-blank", "honest-reference"} | {
        s for c in _cheats(assignment) for s in _ids(assignment)[c.name] if c.graded or "honest" in s}
    assert expected <= set(graded["scores"]), (expected - set(graded["scores"]), proc.stdout[-3000:])
    for path, digest in graded["sources"].items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, f"{path} was changed"


@pytest.mark.parametrize("assignment", list(COURSES))
def test_honest_submissions_get_what_they_deserve(courses, assignment):
    scores, graded = courses[assignment]["scores"], courses[assignment]
    assert scores["honest-blank"].score == 0
    assert scores["honest-reference"].score == scores["honest-reference"].max_score > 0
    assert not _vectors(graded, "honest-reference"), "the reference must raise no integrity finding"


def test_tampering_does_not_add_to_an_honest_partial_answer(courses):
    graded = courses["ch01_perceptron"]
    scores = graded["scores"]
    assert 0 < scores["honest-partial"].score < scores["honest-partial"].max_score
    assert scores["partial-plus-monkeypatch"].score == scores["honest-partial"].score
    assert "monkeypatch" in _vectors(graded, "partial-plus-monkeypatch")


def test_a_process_that_dies_or_hangs_keeps_the_points_of_what_ran_before(courses):
    graded = courses["ch01_perceptron"]
    died, hung = graded["scores"]["fit-then-exit"], graded["scores"]["fit-margin-then-loop"]
    fit, margin = graded["scores"]["honest-reference"].cells["test_fit"], graded["scores"]["honest-reference"].cells[
        "test_margin"]
    assert died.cells == {"test_fit": fit, "test_margin": 0.0, "test_bound": 0.0, "test_is_linearly_separable": 0.0}
    assert hung.cells == {"test_fit": fit, "test_margin": margin, "test_bound": 0.0, "test_is_linearly_separable": 0.0}
    reasons = {row["vector"]: row["detail"] for row in graded["report"] if row["student"] == "fit-then-exit"}
    assert "exited with status 1" in reasons["kernel-died"]
    reasons = {row["vector"]: row["detail"] for row in graded["report"] if row["student"] == "fit-margin-then-loop"}
    assert "stopped after 15 s" in reasons["resource-abuse"]
    notebook = graded["course"] / "autograded" / "fit-then-exit" / "ch01_perceptron" / "perceptron.ipynb"
    assert "your notebook's process ended in margin (exited with status 1)" in notebook.read_text()


def test_a_broken_file_is_quarantined_with_its_reason(courses):
    graded = courses["ch01_perceptron"]
    quarantine = graded["course"] / "quarantine" / "ch01_perceptron"
    reasons = [p.read_text() for p in quarantine.rglob("reason.txt")]
    assert reasons and any("broken-file" in r and "cut off" in r for r in reasons), reasons
    assert "broken-file" not in graded["scores"] or graded["scores"]["broken-file"].score == 0


@pytest.mark.parametrize("cheat", [c for a in COURSES for c in _cheats(a)], ids=lambda c: c.name)
def test_cheat_scores_no_more_than_unanswered_harms_no_one_and_is_reported(courses, cheat):
    graded = courses[cheat.assignment or "ch01_perceptron"]
    student, honest = _ids(graded["assignment"])[cheat.name]
    result = graded["scores"].get(student)
    if cheat.graded:
        assert result is not None, f"{cheat.name} was not graded"
        assert result.score <= graded["scores"]["honest-blank"].score, (cheat.name, result.cells)
    else:
        assert result is None or result.score == 0, (cheat.name, result)
        assert any(student in p.read_text() for p in (graded["course"] / "quarantine").rglob("reason.txt"))
    after = graded["scores"][honest]
    assert after.score == after.max_score, f"the honest student graded after {cheat.name} got {after}"
    found = _vectors(graded, student)
    assert found & set(cheat.vectors), f"{cheat.name}: expected one of {cheat.vectors} in the report, got {found}"
    assert set(cheat.require) <= found, f"{cheat.name}: expected all of {cheat.require} in the report, got {found}"
