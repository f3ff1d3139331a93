"""The fixture assignment ``tests/fixtures/networks``: grading modules, trained models and in-place changes.

Its hidden tests use the ``dlvision.testing`` tools (``module_facts``, ``forward_backward``,
``optimizer_facts``, ``student_copy``, ``call_unchanged``) and check every fact the student's
process reports against a trusted reference: ``ResBlock``'s parameters are loaded into a
reference block with ``torch.func.functional_call``, a trained ``TinyNet`` is evaluated here on
points that never enter the student's process, ``freeze`` is tested on a ``student_copy``.
The real ``nbgrader autograde`` grades the reference (full marks), the unanswered notebook (0),
the reference with warnings (full marks) and every mutant of ``mutants.toml`` (fewer points).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

import harness

FIXTURES = Path(__file__).resolve().parent / "fixtures"
ASSIGNMENT = "networks"
MUTANTS = harness.load_mutants(ASSIGNMENT, FIXTURES)


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp(ASSIGNMENT)


@pytest.fixture(scope="module")
def graded(course) -> dict[str, harness.Result]:
    return harness.grade_variants(ASSIGNMENT, course, solutions=FIXTURES)


def test_reference_gets_full_marks_and_blank_zero(graded):
    reference, blank = graded[harness.REFERENCE], graded[harness.BLANK]
    assert reference.max_score == 20
    assert reference.score == 20, reference
    assert blank.score == 0, blank


def test_correct_code_that_warns_keeps_its_points(graded):
    assert graded[harness.WARNS].score == 20, graded[harness.WARNS]
    assert graded[harness.WARNS_UNGUARDED].score < 20, "the warnings never reached a graded cell"


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_mutant_loses_points_in_its_exercise(graded, mutant):
    result = graded[harness.MUTANT_PREFIX + mutant.name]
    assert result.cells[f"test_{mutant.cell}"] == 0, f"{mutant.name} ({mutant.why}): {result}"
    others = {cell: points for cell, points in result.cells.items() if cell != f"test_{mutant.cell}"}
    assert others == {c: p for c, p in graded[harness.REFERENCE].cells.items() if c != f"test_{mutant.cell}"}


def test_feedback_hides_what_the_students_code_printed_during_hidden_tests(graded, course):
    """A ``freeze`` that prints its model (and forgets the head): the feedback shows the visible
    test's model (16 hidden units) and that the hidden tests failed, never the hidden tests' models."""
    from grading import report

    codes = harness.reference_codes(FIXTURES / ASSIGNMENT / "networks.ipynb")
    codes["freeze"] = codes["freeze"].replace("    for parameter in model.body.parameters():",
                                              "    print('freezing', model)\n    for parameter in model.body.parameters():")
    codes["freeze"] = codes["freeze"].replace("parameter.requires_grad_(True)", "pass")
    release = course / "exercises" / ASSIGNMENT / "networks.ipynb"
    folder = course / "submitted" / "chatty" / ASSIGNMENT
    folder.mkdir(parents=True)
    nbformat.write(harness.submission(nbformat.read(release, as_version=4), codes), folder / "networks.ipynb")
    harness.nbgrader(course, "autograde", ASSIGNMENT, "--create", "--force", "--student=chatty")
    assert harness.read_scores(course, ASSIGNMENT, ["chatty"])["chatty"].cells["test_freeze"] == 0
    (page,) = report.generate_feedback(course, ASSIGNMENT, ["chatty"])
    text = page.read_text()
    assert "out_features=16" in text  # printed during the visible test
    assert "out_features=5" not in text and "in_features=5" not in text  # printed during the hidden tests
    assert "hidden tests: failed" in text and "hidden=16: requires_grad" not in text  # nor their messages
