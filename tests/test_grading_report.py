"""``grading.report`` (feedback, grades CSV, integrity report) and the PostgreSQL gradebook.

The feedback and export tests autograde two submissions of ``ch01_perceptron`` with the
real ``nbgrader`` in a scratch course (``tools/harness.py``): ``alice`` hands in the
reference solution, ``bob`` a ``fit`` that ignores ``w0``, which fails some of the tests.
"""

from __future__ import annotations

import csv
import html
import multiprocessing
import re
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook
from postgres import fresh_database, postgres_url  # noqa: F401

import harness
from grading import report
from grading.findings import VECTORS, Finding, write_findings

ASSIGNMENT = "ch01_perceptron"
NOTEBOOK = "perceptron"

WRONG_FIT = '''\
def fit(X, y, *, bias=True, max_epochs=100, w0=None, b0=0.0):
    """Rosenblatt's perceptron, but it always starts from w = 0 (w0 is ignored)."""
    X = np.asarray(X, dtype=np.float64)
    w = np.zeros(X.shape[1])
    b = float(b0) if bias else 0.0
    updates = 0
    for _ in range(max_epochs):
        mistakes = 0
        for i in range(len(X)):
            if y[i] * (X[i] @ w + b) <= 0:
                w += y[i] * X[i]
                if bias:
                    b += y[i]
                mistakes += 1
                updates += 1
        if mistakes == 0:
            break
    return w, float(b), updates
'''
# a line of test_fit's hidden tests, and one of its visible tests
HIDDEN_LINE = "def _reference_perceptron(X, y, bias, max_epochs, w0=None, b0=0.0):"
VISIBLE_LINE = 'check_scalar("updates", updates, 2, integer=True)'


def page_text(page: str) -> str:
    """What a browser shows of an HTML page (tags removed, entities decoded)."""
    return html.unescape(re.sub(r"<[^>]+>", "", page))


def hidden_lines(assignment: str) -> list[str]:
    """The distinctive lines of the hidden tests: long, and not also part of visible code."""
    hidden, visible = [], []
    for path in harness.source_notebooks(assignment):
        for cell in nbformat.read(path, as_version=4).cells:
            inside = False
            for line in cell.source.splitlines():
                if "BEGIN HIDDEN TESTS" in line or "END HIDDEN TESTS" in line:
                    inside = "BEGIN" in line
                    continue
                (hidden if inside else visible).append(line.strip())
    return sorted({line for line in hidden if len(line) >= 25} - set(visible))


# --------------------------------------------------------------------------- an autograded course


@pytest.fixture(scope="module")
def graded_course(tmp_path_factory) -> Path:
    """A scratch course with alice's (reference) and bob's (wrong fit) submissions autograded."""
    course = harness.make_course(tmp_path_factory.mktemp("report-course"), ASSIGNMENT)
    release = harness.generate_release(course, ASSIGNMENT)
    codes = harness.variant_codes(ASSIGNMENT, [])[harness.REFERENCE]
    codes_bob = {name: {**cells, "fit": WRONG_FIT} for name, cells in codes.items()}
    for student, student_codes in (("alice", codes), ("bob", codes_bob)):
        folder = course / "submitted" / student / ASSIGNMENT
        folder.mkdir(parents=True)
        for path in release.glob("*.ipynb"):
            nb = harness.submission(nbformat.read(path, as_version=4), student_codes.get(path.name, {}))
            nbformat.write(nb, folder / path.name)
    harness.nbgrader(course, "autograde", ASSIGNMENT, "--create", "--force")
    scores = harness.read_scores(course, ASSIGNMENT, ["alice", "bob"])
    assert set(scores) == {"alice", "bob"}, (course / "nbgrader.log").read_text()[-4000:]
    assert scores["alice"].score == scores["alice"].max_score
    assert scores["bob"].cells["test_fit"] == 0 and scores["bob"].score > 0, scores["bob"]
    return course


def test_feedback_shows_no_hidden_test(graded_course):
    paths = report.generate_feedback(graded_course, ASSIGNMENT, ["bob"])
    assert paths == [graded_course / "feedback" / "bob" / ASSIGNMENT / f"{NOTEBOOK}.html"]
    page = paths[0].read_text()
    text = page_text(page)
    assert HIDDEN_LINE in hidden_lines(ASSIGNMENT)
    leaked = [line for line in hidden_lines(ASSIGNMENT) if line in text or html.escape(line) in page]
    assert not leaked, f"hidden test lines in the feedback: {leaked[:5]}"
    assert f"# {report.HIDDEN_TESTS_NOTE}" in text
    assert VISIBLE_LINE in text
    # each test cell says whether its hidden tests passed, and shows nothing of what they checked or printed
    autograded = nbformat.read(graded_course / "autograded" / "bob" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4)
    ran = [c for c in autograded.cells if c.metadata.get("grading", {}).get("hidden_ran")]
    assert ran and text.count("hidden tests: passed") + text.count("hidden tests: failed") == len(ran)
    for cell in ran:
        for output in (cell.outputs[i] for i in cell.metadata["grading"]["hidden_outputs"]):
            secret = output.get("evalue") or output.get("text") or ""
            assert secret.strip() not in text and html.escape(secret.strip()) not in page, secret
    assert "Cell In[" not in text
    score = harness.read_scores(graded_course, ASSIGNMENT, ["bob"])["bob"]
    assert f"(Score: {round(score.score, 2)} / {round(score.max_score, 2)})" in text


def test_feedback_for_every_student(graded_course):
    paths = report.generate_feedback(graded_course, ASSIGNMENT)
    assert [p.relative_to(graded_course / "feedback").parts[0] for p in paths] == ["alice", "bob"]
    assert HIDDEN_LINE not in page_text(paths[0].read_text())


def test_feedback_preprocessor_removes_every_trace_of_hidden_tests():
    """Hidden regions, the hidden part's outputs, tracebacks and metadata, on a hand-made notebook."""
    source = 'check(f(1), 2)\n### BEGIN HIDDEN TESTS\n_secret_case = 41\ncheck(f(_secret_case), 42)\n_secret_case\n### END HIDDEN TESTS'

    def graded_cell(listed):
        extra = {"grading": {"hidden_outputs": listed}} if listed is not None else {}
        return nbformat.v4.new_code_cell(
            source,
            metadata={
                "nbgrader": {"grade": True, "solution": False, "grade_id": "t", "points": 1, "checksum": "abc"},
                "tags": ["_secret_case"], **extra,
            },
            outputs=[
                nbformat.v4.new_output("stream", name="stdout", text="ok f(1)\n"),
                nbformat.v4.new_output("stream", name="stdout", text="the student printed 41\n"),
                nbformat.v4.new_output("error", ename="AssertionError", evalue="f(41): expected 42",
                                       traceback=["frame: check(f(_secret_case), 42)", "AssertionError: f(41): expected 42"]),
            ],
        )

    # a later cell whose visible error would quote a hidden helper in its traceback
    later = nbformat.v4.new_code_cell("f(2)", outputs=[nbformat.v4.new_output(
        "error", ename="TypeError", evalue="bad", traceback=["f(2)", "def f(x): check(_secret_case)", "TypeError: bad"])])
    passed = graded_cell([])
    passed.outputs = passed.outputs[:1]
    nb = nbformat.v4.new_notebook(cells=[graded_cell([1, 2]), later, graded_cell(None), passed])
    nb, _ = report.HideHiddenTests().preprocess(nb, {})
    cleaned = nb.cells[0]
    assert cleaned.source == f"check(f(1), 2)\n# {report.HIDDEN_TESTS_NOTE}"
    assert [o.text for o in cleaned.outputs] == ["ok f(1)\n", "hidden tests: failed (what they checked is not shown)\n"]
    assert cleaned.metadata == {"nbgrader": {"grade": True, "solution": False, "grade_id": "t", "points": 1}}
    assert nb.cells[1].outputs[0].traceback == ["TypeError: bad"]
    # without the list of hidden outputs (a notebook autograded elsewhere), no output is kept
    assert [o.text for o in nb.cells[2].outputs] == ["hidden tests: failed (what they checked is not shown)\n"]
    assert nb.cells[3].outputs[-1].text == "hidden tests: passed\n"
    written = nbformat.writes(nb)
    assert "_secret_case" not in written and "printed 41" not in written and "f(41)" not in written


# --------------------------------------------------------------------------- grades CSV


def test_export_adds_integrity_columns(graded_course, tmp_path):
    folder = graded_course / "integrity" / ASSIGNMENT
    write_findings(
        folder / "bob.preflight.json",
        [
            Finding("wrong-kernel", "", "kernelspec is 'ir'", "preflight"),
            Finding("test-cell-edited", "test_fit", "the test cell's code changed", "preflight"),
        ],
        student="bob",
        notebook=NOTEBOOK,
    )
    write_findings(folder / "bob.run.json", [Finding("monkeypatch", "fit", "replaces np.allclose", "runtime")], student="bob")
    write_findings(folder / "alice.run.json", [], student="alice", notebook=NOTEBOOK)

    out = report.export_grades(graded_course, tmp_path / "grades.csv")
    harness.nbgrader(graded_course, "export", f"--to={tmp_path / 'plain.csv'}")
    with out.open(newline="") as f:
        reader = csv.DictReader(f)
        columns, rows = reader.fieldnames, list(reader)
    with (tmp_path / "plain.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        plain_columns, plain_rows = reader.fieldnames, list(reader)

    assert columns == [*plain_columns, "integrity_flags", "integrity_vectors"]
    assert [{k: row[k] for k in plain_columns} for row in rows] == plain_rows
    assert [(row["assignment"], row["student_id"]) for row in rows] == [(ASSIGNMENT, "alice"), (ASSIGNMENT, "bob")]
    integrity = {row["student_id"]: (row["integrity_flags"], row["integrity_vectors"]) for row in rows}
    assert integrity == {"alice": ("0", ""), "bob": ("3", "monkeypatch;test-cell-edited;wrong-kernel")}


# --------------------------------------------------------------------------- integrity report


def write_example_findings(course: Path) -> list[dict]:
    """bob: 3 findings (one with HTML in its detail); carol: 1; dave: none. The rows expected."""
    folder = course / "integrity" / ASSIGNMENT
    bob_preflight = [Finding("test-cell-edited", "test_fit", "the test cell now ends with <script>alert(1)</script>", "preflight")]
    bob_run = [
        Finding("monkeypatch", "fit", "replaces numpy.allclose", "runtime"),
        Finding("grader-files", "cell 7", "opens gradebook.db & source/", "sandbox"),
    ]
    carol_run = [Finding("monkeypatch", "margin", "replaces builtins.abs", "static")]
    write_findings(folder / "bob.preflight.json", bob_preflight, student="bob", notebook=NOTEBOOK)
    write_findings(folder / "bob.run.json", bob_run, student="bob", notebook=NOTEBOOK)
    write_findings(folder / "carol.run.json", carol_run, student="carol", notebook=NOTEBOOK)
    write_findings(folder / "dave.preflight.json", [], student="dave", notebook=NOTEBOOK)
    write_findings(folder / "dave.run.json", [], student="dave", notebook=NOTEBOOK)
    return [
        {"student": student, "notebook": NOTEBOOK, "meaning": VECTORS[f.vector], **f.to_dict()}
        for student, findings in (("bob", bob_preflight + bob_run), ("carol", carol_run))
        for f in findings
    ]


def test_integrity_rows_are_the_findings(tmp_path):
    expected = write_example_findings(tmp_path)
    assert report.integrity_rows(tmp_path, ASSIGNMENT) == expected


def test_integrity_report(tmp_path):
    expected = write_example_findings(tmp_path)
    csv_path, html_path = report.write_integrity_report(tmp_path, ASSIGNMENT, scores={"bob": 3.0, "carol": 20, "erin": 0})
    assert (csv_path, html_path) == (tmp_path / "integrity" / ASSIGNMENT / "report.csv", csv_path.with_name("report.html"))
    with csv_path.open(newline="") as f:
        assert list(csv.DictReader(f)) == expected

    page = html_path.read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&amp;" in page
    assert not re.search(r"<link|<script|src=|https?://", page), "the report must be self-contained"
    text = page_text(page)
    # checked: bob, carol, dave (findings files) and erin (a score); flagged: bob and carol
    assert "4 students checked, 2 with findings, 4 findings in all." in text
    assert re.search(r"monkeypatch\s*" + re.escape(VECTORS["monkeypatch"]) + r"\s*2", text)
    assert text.index("bob (score: 3)") < text.index("carol (score: 20)")
    assert "dave" not in text and "erin" not in text


def test_integrity_report_without_findings(tmp_path):
    csv_path, html_path = report.write_integrity_report(tmp_path, ASSIGNMENT)
    assert csv_path.read_text() == ",".join(report.REPORT_FIELDS) + "\n"
    assert "No findings" in html_path.read_text()


# --------------------------------------------------------------------------- the gradebook on PostgreSQL


def test_gradebook_on_postgres(postgres_url):  # noqa: F811
    url = fresh_database(postgres_url, "gradebook_schema")
    with Gradebook(url, course_id="dlvr") as gb:
        assert gb.engine.dialect.name == "postgresql"
        gb.add_assignment("ps1")
        gb.add_student("alice", first_name="Alice", last_name="Liddell")
    with Gradebook(url, course_id="dlvr") as gb:
        assert [a.name for a in gb.assignments] == ["ps1"]
        assert [(s.id, s.first_name, s.last_name) for s in gb.students] == [("alice", "Alice", "Liddell")]


_start_together = None


def _wait_for_each_other(barrier) -> None:
    global _start_together
    _start_together = barrier


def _submit(url: str, students: list[str]) -> int:
    """Add a submission for each student, in this process's own Gradebook; how many."""
    _start_together.wait(timeout=120)
    with Gradebook(url, course_id="dlvr") as gb:
        for student in students:
            gb.add_student(student)
            gb.add_submission("ps1", student)
    return len(students)


def test_gradebook_on_postgres_takes_concurrent_writers(postgres_url):  # noqa: F811
    url = fresh_database(postgres_url, "gradebook_concurrent")
    with Gradebook(url, course_id="dlvr") as gb:
        gb.add_assignment("ps1")
        gb.add_notebook(NOTEBOOK, "ps1")
        for cell in ("test_fit", "test_margin"):
            gb.add_grade_cell(cell, NOTEBOOK, "ps1", max_score=5, cell_type="code")
    batches = [[f"w{worker}-s{i}" for i in range(8)] for worker in range(2)]
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(batches))
    with ProcessPoolExecutor(len(batches), mp_context=context, initializer=_wait_for_each_other, initargs=(barrier,)) as pool:
        done = [future.result(timeout=300) for future in [pool.submit(_submit, url, batch) for batch in batches]]
    assert done == [8, 8]
    with Gradebook(url, course_id="dlvr") as gb:
        submissions = gb.assignment_submissions("ps1")
        assert sorted(s.student.id for s in submissions) == sorted(sum(batches, []))
        assert all(s.max_score == 10 for s in submissions)
