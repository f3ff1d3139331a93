"""exercises/ is exactly what nbgrader generates from solutions/, and no notebook has outputs."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

import harness

ASSIGNMENTS = harness.assignments()
ALL_NOTEBOOKS = sorted(harness.SOLUTIONS.glob("*/*.ipynb")) + sorted(harness.EXERCISES.glob("*/*.ipynb"))


def _files(folder: Path) -> dict[str, Path]:
    return {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_exercises_are_generated_from_solutions(assignment, tmp_path):
    course = harness.make_course(tmp_path, assignment)
    generated = _files(harness.generate_release(course, assignment))
    committed = _files(harness.EXERCISES / assignment)
    hint = "run `python tools/release.py` and commit exercises/"
    assert sorted(committed) == sorted(generated), f"{assignment}: files differ from a fresh release; {hint}"
    for name, path in generated.items():
        if name.endswith(".ipynb"):
            same = nbformat.read(path, as_version=4) == nbformat.read(committed[name], as_version=4)
        else:
            same = path.read_bytes() == committed[name].read_bytes()
        assert same, f"exercises/{assignment}/{name} is not what solutions/ generates; {hint}"


def test_no_release_without_a_source():
    stale = sorted(p.name for p in harness.EXERCISES.glob("*") if p.is_dir() and p.name not in ASSIGNMENTS)
    assert not stale, f"exercises/ has assignments with no source in solutions/: {stale}"


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: str(p.relative_to(harness.REPO)))
def test_no_outputs_committed(path):
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert not cell.outputs, f"{path.name}: cell {i} has outputs; clear them before committing"
            assert cell.execution_count is None, f"{path.name}: cell {i} has an execution count"
