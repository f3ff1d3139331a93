"""Pre-flight (grading.preflight): every corruption becomes a finding and a repaired
notebook that nbgrader can grade, or a quarantine with a reason. No notebook is run."""

import copy
import json
import random
from pathlib import Path

import nbformat
import pytest

from grading.preflight import PreflightResult, preflight

REPO = Path(__file__).resolve().parents[1]

RELEASES = sorted(REPO.glob("exercises/*/*.ipynb"))
PERCEPTRON = REPO / "exercises" / "ch01_perceptron" / "perceptron.ipynb"


@pytest.fixture(scope="module")
def release() -> nbformat.NotebookNode:
    return nbformat.read(PERCEPTRON, as_version=4)


@pytest.fixture
def student(release) -> nbformat.NotebookNode:
    """The release with every solution answered (so the tests can see that answers are kept)."""
    notebook = copy.deepcopy(release)
    for cell in notebook.cells:
        if _nbgrader(cell).get("solution"):
            cell.source = cell.source.replace("raise NotImplementedError()", f"return 'answer of {_grade_id(cell)}'")
    return notebook


def _nbgrader(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def _grade_id(cell) -> str | None:
    return _nbgrader(cell).get("grade_id")


def grade_ids(notebook) -> list[str]:
    return [_grade_id(cell) for cell in notebook.cells if _grade_id(cell)]


def cell(notebook, grade_id: str):
    (found,) = [c for c in notebook.cells if _grade_id(c) == grade_id]
    return found


def position(notebook, grade_id: str) -> int:
    return [_grade_id(c) for c in notebook.cells].index(grade_id)


def vectors(result: PreflightResult) -> list[str]:
    return [finding.vector for finding in result.findings]


def run(notebook, release, **options) -> PreflightResult:
    text = notebook if isinstance(notebook, str | bytes) else nbformat.writes(notebook)
    return preflight(text, release, **options)


def assert_gradable(result: PreflightResult, release, student=None) -> None:
    """Valid, the release's grade cells in order with its metadata and locked sources, answers kept."""
    assert result.quarantine_reason is None, result.quarantine_reason
    notebook = result.notebook
    nbformat.validate(notebook)
    assert grade_ids(notebook) == grade_ids(release)
    for released in release.cells:
        if not _grade_id(released):
            continue
        repaired = cell(notebook, _grade_id(released))
        assert repaired.metadata["nbgrader"] == released.metadata["nbgrader"]
        assert repaired.cell_type == released.cell_type
        if not _nbgrader(released).get("solution"):
            assert repaired.source == released.source
        elif student is not None and any(_grade_id(c) == _grade_id(released) for c in student.cells):
            assert repaired.source == cell(student, _grade_id(released)).source
    again = preflight(nbformat.writes(notebook), release)
    assert again.findings == [], "a repaired notebook must pass pre-flight cleanly"


def assert_quarantined(result: PreflightResult, *words: str) -> None:
    assert result.notebook is None
    assert "quarantined" in vectors(result)
    reason = result.quarantine_reason
    assert reason[0].isupper() and reason.endswith("."), reason
    for word in words:
        assert word in reason, reason


# ---------------------------------------------------------------- clean submissions


@pytest.mark.parametrize("path", RELEASES, ids=lambda p: p.parent.name)
def test_the_release_itself_passes_without_findings(path):
    release = nbformat.read(path, as_version=4)
    result = preflight(path, release, filename=path.name, release_name=path.name)
    assert result.findings == []
    assert result.quarantine_reason is None
    assert [c.source for c in result.notebook.cells] == [c.source for c in release.cells]
    assert result.notebook == release


def test_answered_notebook_passes_without_findings(release, student):
    result = run(student, release)
    assert result.findings == []
    assert [c.source for c in result.notebook.cells] == [c.source for c in student.cells]


def test_cells_the_student_added_stay_in_place_without_nbgrader_metadata(release, student):
    scratch = nbformat.v4.new_code_cell("print(fit)")
    note = nbformat.v4.new_markdown_cell("My notes on the perceptron.")
    student.cells.insert(position(student, "fit") + 1, scratch)
    student.cells.insert(1, note)
    result = run(student, release)
    assert result.findings == []
    sources = [c.source for c in result.notebook.cells]
    assert sources == [c.source for c in student.cells]
    assert_gradable(result, release, student)


# ---------------------------------------------------------------- files that are not notebooks


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"", ["empty"]),
        (b"   \n", ["blank"]),
        (b"\x00\x01\x02binary", ["binary"]),
        (b"%PDF-1.4 a printed notebook", ["PDF"]),
        (b"\x89PNG\r\n\x1a\n", ["PNG"]),
        (b"PK\x03\x04 zipped", ["zip"]),
        (b"caf\xe9 latin-1", ["UTF-8"]),
        (b"<html><body>Colab</body></html>", ["HTML", "not valid JSON"]),
        (b"import numpy as np\ndef fit(X, y):\n    pass\n", ["Python source", "not valid JSON"]),
        (b'{"cells": [}', ["not valid JSON"]),
        (b"[1, 2, 3]", ["a list"]),
        (b'"just a string"', ["a string"]),
        (b'{"name": "perceptron", "version": 1}', ["without cells"]),
        (b'{"cells": [{"cell_type": "markdown", "sour', ["cut off before its first complete cell"]),
    ],
    ids=lambda v: v[:12].decode("latin-1") if isinstance(v, bytes) else None,
)
def test_files_that_are_not_notebooks_are_quarantined(release, raw, words):
    result = preflight(raw, release)
    assert_quarantined(result, *words)
    assert "invalid-notebook" in vectors(result)


def test_a_file_over_the_size_limit_is_quarantined(release, student, tmp_path):
    path = tmp_path / "perceptron.ipynb"
    nbformat.write(student, path)
    result = preflight(path, release, max_bytes=1000)
    assert_quarantined(result, "limit")
    assert vectors(result) == ["quarantined"]
    assert_quarantined(preflight(path.read_bytes(), release, max_bytes=1000), "limit")


def test_a_missing_file_is_quarantined_not_raised(release, tmp_path):
    assert_quarantined(preflight(tmp_path / "nothing.ipynb", release), "could not be read")


def test_a_notebook_without_cells_is_quarantined(release):
    empty = nbformat.v4.new_notebook()
    assert_quarantined(run(empty, release), "no cells")


def test_another_assignments_notebook_is_quarantined_and_named(release):
    path = REPO / "exercises" / "ch02_backprop" / "backprop.ipynb"
    other = nbformat.read(path, as_version=4)
    result = run(other, release, release_name="perceptron.ipynb", others={"ch02_backprop/backprop.ipynb": other})
    assert_quarantined(result, "perceptron.ipynb", "looks like ch02_backprop/backprop.ipynb")
    without_others = run(other, release, release_name="perceptron.ipynb")
    assert_quarantined(without_others, "Assignment 2: backpropagation by hand")


# ---------------------------------------------------------------- damaged files and formats


def test_a_cut_off_notebook_keeps_its_complete_cells(release, student):
    text = nbformat.writes(student)
    cut = text[: text.index('"grade_id": "test_fit"')]
    result = run(cut, release)
    assert "invalid-notebook" in vectors(result)
    assert "cut off" in result.findings[0].detail
    assert_gradable(result, release)
    assert cell(result.notebook, "fit").source == cell(student, "fit").source
    assert "test-cell-deleted" in vectors(result) and "solution-cell-missing" in vectors(result)


def test_trailing_nul_bytes_and_extra_data_are_removed(release, student):
    text = nbformat.writes(student).encode()
    for damaged, words in ((text + b"\x00" * 64, "NUL"), (text + b"\n}garbage", "extra data")):
        result = preflight(damaged, release)
        assert vectors(result)[0] == "invalid-notebook" and words in result.findings[0].detail
        assert_gradable(result, release, student)


def test_an_nbformat_3_notebook_is_converted(release, student):
    old = nbformat.convert(copy.deepcopy(student), 3)
    result = run(json.dumps(old), release)
    assert vectors(result) == ["invalid-notebook"]
    assert "nbformat 3" in result.findings[0].detail
    assert_gradable(result, release, student)


def test_schema_errors_are_repaired(release, student):
    document = json.loads(nbformat.writes(student))
    cells = document["cells"]
    del cells[position(student, "fit")]["outputs"]
    del cells[position(student, "margin")]["execution_count"]
    del cells[position(student, "bound")]["metadata"]
    cells[position(student, "test_fit")]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "ok\n"}]
    cells[position(student, "test_margin")]["outputs"] = [{"output_type": "no such type"}]
    cells[position(student, "setup")]["id"] = cells[0]["id"]  # a duplicate id
    cells[position(student, "test_bound")]["id"] = "not a valid id!"
    del cells[position(student, "end_text")]["id"]
    result = run(json.dumps(document), release)
    details = " ".join(f.detail for f in result.findings if f.vector == "invalid-notebook")
    for words in ("outputs list", "execution_count", "metadata object", "Duplicate cell ids", "ids that the format"):
        assert words in details
    assert "Outputs that the format does not allow were dropped" in details
    assert cell(result.notebook, "test_fit").outputs[0].text == "ok\n"
    assert cell(result.notebook, "test_margin").outputs == []
    # the solution cell that lost all its metadata is recognised by its function
    assert "metadata-stripped" in vectors(result)
    ids = [c.id for c in result.notebook.cells]
    assert len(set(ids)) == len(ids)
    assert_gradable(result, release, student)


def test_a_wrong_or_missing_kernel_is_set_to_the_releases(release, student):
    student.metadata.kernelspec = {"name": "ir", "display_name": "R", "language": "R"}
    del student.metadata["language_info"]
    result = run(student, release)
    assert vectors(result) == ["wrong-kernel", "wrong-kernel"]
    assert "'ir'" in result.findings[0].detail
    assert result.notebook.metadata.kernelspec == release.metadata.kernelspec
    assert result.notebook.metadata.language_info == release.metadata.language_info


# ---------------------------------------------------------------- grade cells


def test_an_edited_test_cell_is_restored(release, student):
    cell(student, "test_fit").source = "pass  # all tests pass"
    result = run(student, release)
    assert vectors(result) == ["test-cell-edited"]
    assert result.findings[0].cell == "test_fit"
    assert_gradable(result, release, student)


def test_an_edited_locked_cell_is_restored(release, student):
    cell(student, "setup").source += "\ncheck_array = lambda *args, **kwargs: None\n"
    result = run(student, release)
    assert vectors(result) == ["test-cell-edited"]
    assert "Locked cell 'setup'" in result.findings[0].detail
    assert_gradable(result, release, student)


def test_a_deleted_test_cell_is_reinserted_after_its_solution(release, student):
    del student.cells[position(student, "test_margin")]
    result = run(student, release)
    assert vectors(result) == ["test-cell-deleted"]
    assert position(result.notebook, "test_margin") == position(result.notebook, "margin") + 1
    assert_gradable(result, release, student)


def test_consecutive_deleted_cells_are_reinserted_in_order(release, student):
    for grade_id in ("test_fit", "margin_text", "margin"):
        del student.cells[position(student, grade_id)]
    result = run(student, release)
    assert vectors(result) == ["test-cell-deleted", "test-cell-deleted", "solution-cell-missing"]
    assert "after the re-inserted cell 'test_fit'" in result.findings[1].detail
    assert_gradable(result, release, student)


def test_a_test_cell_turned_into_markdown_is_code_again(release, student):
    test = cell(student, "test_bound")
    test.cell_type = "markdown"
    del test["outputs"], test["execution_count"]
    result = run(student, release)
    assert vectors(result) == ["test-cell-markdown"]
    assert_gradable(result, release, student)


def test_a_test_cell_turned_into_raw_without_metadata_is_found_and_restored(release, student):
    test = cell(student, "test_bound")
    at = position(student, "test_bound")
    student.cells[at] = nbformat.v4.new_raw_cell(test.source)
    result = run(student, release)
    assert sorted(vectors(result)) == ["metadata-stripped", "test-cell-markdown"]
    assert_gradable(result, release, student)


def test_a_duplicated_test_cell_keeps_the_copy_after_its_solution(release, student):
    copy_above = copy.deepcopy(cell(student, "test_fit"))
    copy_above.id = "copyabove"
    student.cells.insert(position(student, "fit"), copy_above)
    result = run(student, release)
    assert vectors(result) == ["test-cell-duplicated"]
    assert position(result.notebook, "test_fit") == position(result.notebook, "fit") + 1
    assert len(result.notebook.cells) == len(release.cells)
    assert_gradable(result, release, student)


def test_a_stripped_copy_of_a_test_cell_is_dropped(release, student):
    stray = nbformat.v4.new_code_cell(cell(student, "test_fit").source)
    student.cells.append(stray)
    result = run(student, release)
    assert vectors(result) == ["test-cell-duplicated"]
    assert "copy of test cell 'test_fit'" in result.findings[0].detail
    assert len(result.notebook.cells) == len(release.cells)
    assert_gradable(result, release, student)


def test_a_duplicated_solution_cell_keeps_metadata_on_the_last_copy(release, student):
    first = cell(student, "margin")
    last = copy.deepcopy(first)
    last.id = "lastcopy"
    last.source = first.source.replace("answer of margin", "second answer")
    student.cells.insert(position(student, "test_margin"), last)
    result = run(student, release)
    assert vectors(result) == ["test-cell-duplicated"]
    assert "solution cell" in result.findings[0].detail.lower()
    notebook = result.notebook
    assert cell(notebook, "margin").source == last.source
    plain = [c for c in notebook.cells if c.source == first.source]
    assert len(plain) == 1 and "nbgrader" not in plain[0].metadata
    assert [c.source for c in notebook.cells] == [c.source for c in student.cells]


def test_a_missing_solution_cell_is_inserted_unanswered(release, student):
    del student.cells[position(student, "bound")]
    result = run(student, release)
    assert vectors(result) == ["solution-cell-missing"]
    assert cell(result.notebook, "bound").source == cell(release, "bound").source
    assert position(result.notebook, "bound") == position(result.notebook, "bound_text") + 1
    assert_gradable(result, release)


def test_a_solution_defined_in_another_graded_cell_is_not_overridden(release, student):
    fit = cell(student, "fit")
    fit.source += "\n\n\ndef bound(X, y, w, b=0.0, *, bias):\n    return 'answer of bound'\n"
    del student.cells[position(student, "bound")]
    result = run(student, release)
    assert vectors(result) == ["solution-cell-missing"]
    assert "defined in cell" in result.findings[0].detail
    assert "bound" not in grade_ids(result.notebook)


def test_a_solution_written_into_a_test_cell_is_kept(release, student):
    answer = "def margin(X, y, w, b=0.0):\n    return 'answer written in the test cell'\n"
    cell(student, "test_margin").source = answer
    del student.cells[position(student, "margin")]
    result = run(student, release)
    assert vectors(result) == ["test-cell-deleted", "grade-id-renamed"]
    assert "had the grade id 'test_margin'" in result.findings[1].detail
    assert cell(result.notebook, "margin").source == answer
    assert position(result.notebook, "test_margin") == position(result.notebook, "margin") + 1
    assert_gradable(result, release)


@pytest.mark.parametrize("seed", range(40))
def test_random_cell_damage_always_gives_a_gradable_notebook(release, student, seed):
    """Cells moved, deleted, duplicated, retyped, stripped or renamed: never an exception,
    always a valid notebook with the release's metadata on its grade cells, and stable."""
    rng = random.Random(seed)
    cells = student.cells
    for _ in range(rng.randint(1, 8)):
        i, j = rng.randrange(len(cells)), rng.randrange(len(cells))
        damage = rng.randrange(6)
        if damage == 0:
            cells[i], cells[j] = cells[j], cells[i]
        elif damage == 1 and len(cells) > 1:
            del cells[i]
        elif damage == 2:
            cells.insert(j, copy.deepcopy(cells[i]))
        elif damage == 3:
            cells[i].metadata.pop("nbgrader", None)
        elif damage == 4 and "nbgrader" in cells[j].metadata:
            cells[i].metadata["nbgrader"] = copy.deepcopy(cells[j].metadata["nbgrader"])
        elif damage == 5 and "nbgrader" in cells[i].metadata:
            cells[i].metadata.nbgrader.grade_id = f"renamed{i}"
    result = preflight(json.dumps(student), release)  # not nbformat.writes: it would repair duplicate ids
    if result.notebook is None:
        assert_quarantined(result)
        return
    nbformat.validate(result.notebook)
    released = {_grade_id(c): c.metadata["nbgrader"] for c in release.cells if _grade_id(c)}
    ids = grade_ids(result.notebook)
    assert len(ids) == len(set(ids))
    for repaired in result.notebook.cells:
        if _grade_id(repaired):
            assert repaired.metadata["nbgrader"] == released[_grade_id(repaired)]
    again = preflight(nbformat.writes(result.notebook), release)
    assert all("defined in cell" in finding.detail for finding in again.findings)


@pytest.mark.parametrize("grade_id", ["test_fit", "fit", "setup", "intro"])
def test_stripped_metadata_is_restored(release, student, grade_id):
    stripped = cell(student, grade_id)
    del stripped.metadata["nbgrader"]
    result = run(student, release)
    assert vectors(result) == ["metadata-stripped"]
    assert result.findings[0].cell == grade_id
    assert_gradable(result, release, student)


def test_a_stripped_solution_cell_is_found_by_its_function_despite_a_new_body(release, student):
    solution = cell(student, "is_linearly_separable")
    del solution.metadata["nbgrader"]
    solution.source = "import itertools\n\n\ndef is_linearly_separable(X, y, *, min_margin, bias=True):\n    return 1\n"
    result = run(student, release)
    assert vectors(result) == ["metadata-stripped"]
    assert "functions it defines" in result.findings[0].detail
    assert cell(result.notebook, "is_linearly_separable").source == solution.source


@pytest.mark.parametrize("path", RELEASES, ids=lambda p: p.parent.name)
def test_every_grade_cell_stripped_is_recovered(path):
    release = nbformat.read(path, as_version=4)
    student = copy.deepcopy(release)
    for each in student.cells:
        each.metadata.pop("nbgrader", None)
    result = run(student, release)
    assert set(vectors(result)) == {"metadata-stripped"}
    assert len(result.findings) == len(grade_ids(release))
    assert_gradable(result, release, student)


def test_a_renamed_grade_id_is_restored(release, student):
    cell(student, "test_bound").metadata.nbgrader.grade_id = "test_bound_mine"
    cell(student, "margin").metadata.nbgrader.grade_id = "my_margin"
    result = run(student, release)
    assert vectors(result) == ["grade-id-renamed", "grade-id-renamed"]
    assert "'test_bound_mine'" in result.findings[1].detail
    assert_gradable(result, release, student)


def test_nbgrader_metadata_of_a_student_cell_is_removed(release, student):
    extra = nbformat.v4.new_code_cell("print('my own check')")
    extra.metadata["nbgrader"] = {"grade": True, "grade_id": "bonus", "points": 100, "solution": False}
    student.cells.append(extra)
    result = run(student, release)
    assert vectors(result) == ["grade-id-renamed"]
    assert result.findings[0].cell == f"cell {len(student.cells)}"
    assert "nbgrader" not in result.notebook.cells[-1].metadata
    assert result.notebook.cells[-1].source == extra.source
    assert_gradable(result, release, student)


def test_changed_points_are_reported_and_restored(release, student):
    cell(student, "test_fit").metadata.nbgrader.points = 100
    result = run(student, release)
    assert vectors(result) == ["test-cell-edited"]
    assert "points 6 -> 100" in result.findings[0].detail
    assert_gradable(result, release, student)


# ---------------------------------------------------------------- names


@pytest.mark.parametrize("filename", ["Copy of perceptron.ipynb", "perceptron (2).ipynb", "perceptron_jdoe.ipynb"])
def test_a_renamed_notebook_is_reported(release, student, filename):
    result = run(student, release, filename=filename, release_name="perceptron.ipynb")
    assert vectors(result) == ["renamed-notebook"]
    assert filename in result.findings[0].detail
    assert_gradable(result, release, student)


def test_the_release_name_is_not_a_rename(release, student):
    assert (
        run(student, release, filename="some/folder/perceptron.ipynb", release_name="perceptron.ipynb").findings == []
    )


def test_a_release_without_grade_ids_is_a_programming_error(release):
    broken = copy.deepcopy(release)
    del cell(broken, "fit").metadata.nbgrader["grade_id"]
    with pytest.raises(ValueError, match="grade id"):
        preflight(nbformat.writes(release), broken)
