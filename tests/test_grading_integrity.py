"""The adversarial-submission suite: every integrity vector, through the real pipeline.

One scratch course of chapter 1 gets the unanswered notebook, the reference, a partly
answered notebook with and without tampering, a broken file, and every cheat of
``tools/cheats.py`` applied to the unanswered notebook. ``python -m grading autograde``
grades them all in one batch with two workers. Each cheat must score no more than
the honest unanswered notebook and appear in the integrity report under its vector;
the honest ones must get exactly what they deserve.
"""

from __future__ import annotations

import copy
import csv
import subprocess
import sys

import nbformat
import pytest
from cheats import CHEATS, MONKEYPATCH

import harness

ASSIGNMENT = "ch01_perceptron"
REPO = harness.REPO


def _write(course, student, nb_or_bytes):
    folder = course / "submitted" / student / ASSIGNMENT
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "perceptron.ipynb"
    if isinstance(nb_or_bytes, bytes):
        path.write_bytes(nb_or_bytes)
    else:
        nbformat.write(nb_or_bytes, path)


def _partial(release_nb, reference):
    """Only ``fit`` answered."""
    return harness.submission(release_nb, {"fit": reference["fit"]})


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    course = harness.make_course(tmp_path_factory.mktemp("integrity"), ASSIGNMENT)
    with (course / "nbgrader_config.py").open("a") as config:  # short limits: the loops end sooner
        config.write("c.IsolatedExecute.cell_seconds = 15\nc.IsolatedExecute.notebook_seconds = 60\n")
    release = harness.generate_release(course, ASSIGNMENT)
    release_nb = nbformat.read(release / "perceptron.ipynb", as_version=4)
    reference = harness.reference_codes(REPO / "solutions" / ASSIGNMENT / "perceptron.ipynb")
    _write(course, "honest-blank", release_nb)
    _write(course, "honest-reference", harness.submission(release_nb, reference))
    _write(course, "honest-partial", _partial(release_nb, reference))
    patched = _partial(release_nb, reference)
    patched.cells.append(nbformat.v4.new_code_cell(MONKEYPATCH))
    _write(course, "partial-plus-monkeypatch", patched)
    _write(course, "broken-file", b'{"cells": [ this is not json')
    # right answers before the process dies or hangs keep their points
    _write(course, "fit-then-exit", harness.submission(
        release_nb, {"fit": reference["fit"], "margin": "import os\nos._exit(1)"}))
    _write(course, "fit-margin-then-loop", harness.submission(
        release_nb, {"fit": reference["fit"], "margin": reference["margin"], "bound": "while True:\n    pass"}))
    for cheat in CHEATS:
        _write(course, f"cheat-{cheat.name}", cheat.apply(copy.deepcopy(release_nb)))
    proc = subprocess.run([sys.executable, "-m", "grading", "--course", str(course), "autograde", ASSIGNMENT,
                           "--workers", "2"], cwd=REPO, capture_output=True, text=True, timeout=1200)
    students = [p.name for p in (course / "submitted").iterdir()]
    scores = harness.read_scores(course, ASSIGNMENT, students)
    with (course / "integrity" / ASSIGNMENT / "report.csv").open() as handle:
        report = list(csv.DictReader(handle))
    return {"proc": proc, "scores": scores, "report": report, "course": course}


def _vectors(graded, student):
    return {row["vector"] for row in graded["report"] if row["student"] == student}


def test_the_batch_completes(graded):
    proc = graded["proc"]
    assert "Traceback" not in proc.stderr.split("autograde")[0], proc.stderr[-3000:]
    expected = {"honest-blank", "honest-reference", "honest-partial", "partial-plus-monkeypatch",
                *(f"cheat-{c.name}" for c in CHEATS)}
    assert expected <= set(graded["scores"]), (expected - set(graded["scores"]), proc.stdout[-3000:])


def test_honest_submissions_get_what_they_deserve(graded):
    scores = graded["scores"]
    assert scores["honest-blank"].score == 0
    assert scores["honest-reference"].score == scores["honest-reference"].max_score == 20
    assert 0 < scores["honest-partial"].score < 20
    assert not _vectors(graded, "honest-reference"), "the reference must raise no integrity finding"


def test_tampering_does_not_add_to_an_honest_partial_answer(graded):
    scores = graded["scores"]
    assert scores["partial-plus-monkeypatch"].score == scores["honest-partial"].score
    assert "monkeypatch" in _vectors(graded, "partial-plus-monkeypatch")


def test_a_process_that_dies_or_hangs_keeps_the_points_of_what_ran_before(graded):
    died, hung = graded["scores"]["fit-then-exit"], graded["scores"]["fit-margin-then-loop"]
    assert died.cells == {"test_fit": 6.0, "test_margin": 0.0, "test_bound": 0.0, "test_is_linearly_separable": 0.0}
    assert hung.cells == {"test_fit": 6.0, "test_margin": 4.0, "test_bound": 0.0, "test_is_linearly_separable": 0.0}
    reasons = {row["vector"]: row["detail"] for row in graded["report"] if row["student"] == "fit-then-exit"}
    assert "exited with status 1" in reasons["kernel-died"]
    reasons = {row["vector"]: row["detail"] for row in graded["report"] if row["student"] == "fit-margin-then-loop"}
    assert "stopped after 15 s" in reasons["resource-abuse"]
    feedback = (graded["course"] / "autograded" / "fit-then-exit" / ASSIGNMENT / "perceptron.ipynb").read_text()
    assert "your notebook's process ended in margin (exited with status 1)" in feedback


def test_a_broken_file_is_quarantined_with_its_reason(graded):
    quarantine = graded["course"] / "quarantine" / ASSIGNMENT
    reasons = [p.read_text() for p in quarantine.rglob("reason.txt")]
    assert reasons and any("broken-file" in r and "cut off" in r for r in reasons), reasons
    assert "broken-file" not in graded["scores"] or graded["scores"]["broken-file"].score == 0


@pytest.mark.parametrize("cheat", CHEATS, ids=lambda c: c.name)
def test_cheat_scores_no_more_than_unanswered_and_is_reported(graded, cheat):
    student = f"cheat-{cheat.name}"
    result = graded["scores"][student]
    assert result.score <= graded["scores"]["honest-blank"].score, (cheat.name, result.cells)
    found = _vectors(graded, student)
    assert found & set(cheat.vectors), f"{cheat.name}: expected one of {cheat.vectors} in the report, got {found}"
