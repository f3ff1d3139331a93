"""The grader validation harness, over every assignment in ``solutions/``.

For each assignment, one batch of real ``nbgrader autograde`` grades: the reference
solution (full marks), the unchanged exercise (0, and the batch goes on), the
reference with warnings (full marks), and every mutant of ``mutants.toml`` (fewer
points than full marks). See ``tools/harness.py``.

Each assignment is a test class (``TestCh01Perceptron``, ...), so that pytest-xdist's
``--dist loadscope`` gives all of an assignment's tests to one worker and its batch
is graded once.
"""

from __future__ import annotations

import nbformat
import pytest

import harness


def pytest_generate_tests(metafunc):
    if "mutant" in metafunc.fixturenames:
        mutants = harness.load_mutants(metafunc.cls.assignment)
        metafunc.parametrize("mutant", mutants, ids=[m.name for m in mutants])


class GraderChecks:
    """The checks of one assignment; subclasses set ``assignment``."""

    assignment: str

    @pytest.fixture(scope="class")
    @classmethod
    def graded(cls, tmp_path_factory) -> dict[str, harness.Result]:
        """The scores of every variant, graded in one nbgrader batch."""
        return harness.grade_variants(cls.assignment, tmp_path_factory.mktemp(cls.assignment))

    def test_assignment_is_well_formed(self):
        """Every test cell has hidden tests and points; every solution cell its markers; a setup cell."""
        for path in harness.source_notebooks(self.assignment):
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

    def test_mutant_catalogue_is_valid(self):
        """mutants.toml parses, and every mutant applies to the current reference code."""
        mutants = harness.load_mutants(self.assignment)
        assert mutants, f"{self.assignment}: solutions/{self.assignment}/mutants.toml lists no mutant"
        variants = harness.variant_codes(self.assignment, mutants)
        for m in mutants:
            assert variants[harness.MUTANT_PREFIX + m.name] != variants[harness.REFERENCE], (
                f"{self.assignment}: mutant {m.name!r} changes nothing"
            )

    def test_reference_gets_full_marks(self, graded):
        result = graded[harness.REFERENCE]
        assert result.max_score > 0
        assert result.score == result.max_score, f"{self.assignment}: the reference solution got {result}"

    def test_unchanged_exercise_gets_zero_and_the_batch_goes_on(self, graded):
        blank = graded[harness.BLANK]
        assert blank.score == 0, f"{self.assignment}: the unchanged exercise got {blank}"
        # grade_variants raises when a submission was not graded; count them here too.
        assert len(graded) == 4 + len(harness.load_mutants(self.assignment))

    def test_correct_code_that_warns_keeps_its_points(self, graded):
        warns, unguarded = graded[harness.WARNS], graded[harness.WARNS_UNGUARDED]
        assert warns.score == warns.max_score, f"{self.assignment}: the reference with warnings got {warns}"
        # Without the course's warning filter the same notebook loses points, so the
        # warnings really reached the graded cells' stderr.
        assert unguarded.score < unguarded.max_score, (
            f"{self.assignment}: the warnings never reached a graded cell ({unguarded}); the check proves nothing"
        )

    def test_mutant_loses_points(self, graded, mutant):
        result = graded[harness.MUTANT_PREFIX + mutant.name]
        assert result.score < result.max_score, (
            f"{self.assignment}: mutant {mutant.name!r} ({mutant.why}) escaped with full marks: {result}"
        )


def _class_name(assignment: str) -> str:
    return "Test" + "".join(part.capitalize() for part in assignment.split("_"))


for _assignment in harness.assignments():
    globals()[_class_name(_assignment)] = type(_class_name(_assignment), (GraderChecks,), {"assignment": _assignment})
