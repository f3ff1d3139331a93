"""The grader validation harness, over every assignment in ``solutions/``.

For each assignment, one batch of real ``nbgrader autograde`` grades: the reference
solution (full marks), the unchanged exercise (0, and the batch goes on), the
reference with warnings (full marks), and every mutant of ``mutants.toml`` (fewer
points than full marks). See ``tools/harness.py``.
"""

from __future__ import annotations

import nbformat
import pytest

import harness

ASSIGNMENTS = harness.assignments()


def _group(assignment: str, *values):
    # Every test of one assignment runs in the same pytest-xdist worker, so its batch is graded once.
    return pytest.param(assignment, *values, marks=pytest.mark.xdist_group(assignment), id="-".join((assignment, *values)))


ASSIGNMENT_PARAMS = [_group(a) for a in ASSIGNMENTS]
MUTANT_PARAMS = [_group(a, m.name) for a in ASSIGNMENTS for m in harness.load_mutants(a)]


@pytest.fixture(scope="session")
def graded(tmp_path_factory):
    """``graded(assignment)``: the scores of every variant, graded once per session."""
    cache: dict[str, dict[str, harness.Result]] = {}

    def get(assignment: str) -> dict[str, harness.Result]:
        if assignment not in cache:
            cache[assignment] = harness.grade_variants(assignment, tmp_path_factory.mktemp(assignment))
        return cache[assignment]

    return get


@pytest.mark.parametrize("assignment", ASSIGNMENT_PARAMS)
def test_assignment_is_well_formed(assignment):
    """Every test cell has hidden tests and points; every solution cell its markers; a setup cell."""
    for path in harness.source_notebooks(assignment):
        nb = nbformat.read(path, as_version=4)
        grade_ids = [harness.nbgrader_meta(c).get("grade_id") for c in nb.cells if harness.nbgrader_meta(c)]
        assert len(grade_ids) == len(set(grade_ids)), f"{path.name}: duplicated grade ids {grade_ids}"
        assert "setup" in grade_ids, f"{path.name}: no setup cell (grade_id 'setup')"
        tests = [c for c in nb.cells if harness.is_test_cell(c)]
        solutions = [c for c in nb.cells if harness.is_solution_cell(c)]
        assert tests and solutions, f"{path.name}: needs solution cells and graded test cells"
        for cell in tests:
            meta = harness.nbgrader_meta(cell)
            assert meta.get("points", 0) > 0, f"{path.name}: test cell {meta['grade_id']} has no points"
            assert meta.get("locked"), f"{path.name}: test cell {meta['grade_id']} is not locked"
            assert "### BEGIN HIDDEN TESTS" in cell.source, (
                f"{path.name}: test cell {meta['grade_id']} has no hidden tests; hidden tests decide the grade"
            )
        for cell in solutions:
            meta = harness.nbgrader_meta(cell)
            assert cell.cell_type == "code", f"{path.name}: {meta['grade_id']} must be autograded code"
            assert "### BEGIN SOLUTION" in cell.source and "### END SOLUTION" in cell.source, (
                f"{path.name}: solution cell {meta['grade_id']} has no ### BEGIN/END SOLUTION markers"
            )


@pytest.mark.parametrize("assignment", ASSIGNMENT_PARAMS)
def test_mutant_catalogue_is_valid(assignment):
    """mutants.toml parses, and every mutant applies to the current reference code."""
    mutants = harness.load_mutants(assignment)
    assert mutants, f"{assignment}: solutions/{assignment}/mutants.toml lists no mutant"
    variants = harness.variant_codes(assignment, mutants)
    for m in mutants:
        assert variants[harness.MUTANT_PREFIX + m.name] != variants[harness.REFERENCE], (
            f"{assignment}: mutant {m.name!r} changes nothing"
        )


@pytest.mark.parametrize("assignment", ASSIGNMENT_PARAMS)
def test_reference_gets_full_marks(assignment, graded):
    result = graded(assignment)[harness.REFERENCE]
    assert result.max_score > 0
    assert result.score == result.max_score, f"{assignment}: the reference solution got {result}"


@pytest.mark.parametrize("assignment", ASSIGNMENT_PARAMS)
def test_unchanged_exercise_gets_zero_and_the_batch_goes_on(assignment, graded):
    results = graded(assignment)
    assert results[harness.BLANK].score == 0, f"{assignment}: the unchanged exercise got {results[harness.BLANK]}"
    # grade_variants raises when a submission was not graded; check the count here too.
    assert len(results) == 4 + len(harness.load_mutants(assignment))


@pytest.mark.parametrize("assignment", ASSIGNMENT_PARAMS)
def test_correct_code_that_warns_keeps_its_points(assignment, graded):
    results = graded(assignment)
    warns, unguarded = results[harness.WARNS], results[harness.WARNS_UNGUARDED]
    assert warns.score == warns.max_score, f"{assignment}: the reference with warnings got {warns}"
    # Without the course's warning filter the same notebook loses points, so the
    # warnings really reached the graded cells' stderr.
    assert unguarded.score < unguarded.max_score, (
        f"{assignment}: the warnings never reached a graded cell ({unguarded}); the check proves nothing"
    )


@pytest.mark.parametrize(("assignment", "mutant"), MUTANT_PARAMS)
def test_mutant_loses_points(assignment, mutant, graded):
    results = graded(assignment)
    result = results[harness.MUTANT_PREFIX + mutant]
    why = next(m.why for m in harness.load_mutants(assignment) if m.name == mutant)
    assert result.score < result.max_score, (
        f"{assignment}: mutant {mutant!r} ({why}) escaped with full marks: {result}"
    )
