"""What the pipeline hands out: feedback without hidden tests, the grades CSV, the integrity report.

``generate_feedback``
    nbgrader's ``generate_feedback``, with :class:`HideHiddenTests` in front of its
    preprocessors: students see their scores, the visible tests and the last line of
    each error, never the hidden tests.
``export_grades``
    nbgrader's CSV export, with two columns from the integrity findings.
``integrity_rows`` and ``write_integrity_report``
    the findings of one assignment as ``report.csv`` and a self-contained ``report.html``.
"""

from __future__ import annotations

import csv
import html
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from nbconvert.exporters.exporter import ResourcesDict
from nbformat.notebooknode import NotebookNode
from nbgrader import utils
from nbgrader.converters import GenerateFeedback
from nbgrader.plugins import CsvExportPlugin
from nbgrader.preprocessors import ClearHiddenTests

from grading.findings import VECTORS, Finding, read_findings, spreadsheet_safe
from grading.wire import clean_text

# the folder that holds the ``grading`` package: nbgrader's processes import it from there
PACKAGE_PARENT = Path(__file__).resolve().parents[1]

HIDDEN_TESTS_NOTE = "(hidden tests: not shown)"

# findings files of a submission, in the order the pipeline writes them
FINDINGS_SUFFIXES = (".preflight.json", ".run.json")

REPORT_FIELDS = ("student", "notebook", "vector", "meaning", "cell", "detail", "source")
INTEGRITY_COLUMNS = ("integrity_flags", "integrity_vectors")


# --------------------------------------------------------------------------- running nbgrader


def run_nbgrader(course: Path, command: str, *args: str, config: Path | None = None,
                 db_url: str | None = None) -> subprocess.CompletedProcess:
    """Run ``nbgrader <command>`` in the course folder, with ``grading`` importable; raise if it fails.

    ``config`` is an extra nbgrader configuration file (``--config``), for example one
    that puts the gradebook in PostgreSQL; the course's ``nbgrader_config.py`` is read too.
    """
    argv = [sys.executable, "-m", "nbgrader", command, *args, f"--CourseDirectory.root={course}"]
    if config is not None:
        argv.append(f"--config={Path(config).resolve()}")
    if db_url is not None:
        argv.append(f"--CourseDirectory.db_url={db_url}")
    pythonpath = [str(PACKAGE_PARENT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(pythonpath)}
    proc = subprocess.run(argv, cwd=course, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"nbgrader {command} failed (exit {proc.returncode}) in {course}:\n"
            f"{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        )
    return proc


def dotted_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# --------------------------------------------------------------------------- feedback


class HideHiddenTests(ClearHiddenTests):
    """Feedback preprocessor: nothing of the hidden tests reaches the student.

    In every cell, each hidden-test region (the delimiters configured for nbgrader's
    ``ClearHiddenTests``) becomes one line, ``# (hidden tests: not shown)``. The outputs of
    a test cell's hidden part (listed by :mod:`grading.execute` in the cell's metadata,
    ``grading.hidden_outputs``: what the tests and the student's own code printed, their
    errors and the cell's value) are replaced by one line that says whether the hidden
    tests passed; a cell with hidden tests but no such list keeps no output. Error
    tracebacks keep only their last line (``ename: evalue``): their frames quote source
    lines. Grade cells keep only nbgrader's grading metadata.
    """

    def _remove_hidden_test_region(self, cell: NotebookNode) -> bool:
        """Replace each hidden-test region of the cell by a note; whether there was one."""
        note = f"# {HIDDEN_TESTS_NOTE}" if cell.cell_type == "code" else HIDDEN_TESTS_NOTE
        kept, inside, removed = [], False, False
        for line in cell.source.split("\n"):
            if self.begin_test_delimeter in line:
                if not inside:
                    indent = line[: len(line) - len(line.lstrip())]
                    kept.append(indent + note)
                inside = removed = True
            elif self.end_test_delimeter in line:
                inside = False
            elif not inside:
                kept.append(line)
        cell.source = "\n".join(kept)
        return removed

    def preprocess_cell(
        self, cell: NotebookNode, resources: ResourcesDict, cell_index: int
    ) -> tuple[NotebookNode, ResourcesDict]:
        had_hidden_tests = self._remove_hidden_test_region(cell)
        if cell.cell_type == "code":
            grading = cell.metadata.get("grading", {})
            listed = grading.get("hidden_outputs")
            if isinstance(listed, list):  # graded by grading.execute: it says which outputs, and whether they ran
                hidden, ran = set(listed), grading.get("hidden_ran", True) is True
            else:  # graded elsewhere: no output of a cell with hidden tests can be shown
                hidden, ran = set(range(len(cell.outputs))) if had_hidden_tests else set(), False
            failed = any(out.output_type == "error" or out.get("name") == "stderr"
                         for i, out in enumerate(cell.outputs) if i in hidden)
            cell.outputs = [out for i, out in enumerate(cell.outputs) if i not in hidden]
            if ran or hidden:
                verdict = "failed (what they checked is not shown)" if failed else "passed"
                cell.outputs.append(NotebookNode(output_type="stream", name="stdout",
                                                 text=f"hidden tests: {verdict}\n"))
            shorten_tracebacks(cell)
        if utils.is_grade(cell):
            keep_grading_metadata(cell)
        return cell, resources


def shorten_tracebacks(cell: NotebookNode) -> None:
    """Reduce the traceback of each error output of a code cell to ``ename: evalue``."""
    for output in cell.outputs:
        if output.output_type == "error":
            output.traceback = [f"{output.ename}: {output.evalue}"]


def keep_grading_metadata(cell: NotebookNode) -> None:
    """Drop every metadata field but nbgrader's (and its checksum, a hash of the hidden tests)."""
    grading = {k: v for k, v in cell.metadata.get("nbgrader", {}).items() if k != "checksum"}
    cell.metadata = NotebookNode({"nbgrader": NotebookNode(grading)})


def feedback_preprocessors() -> list[str]:
    """:class:`HideHiddenTests`, then nbgrader's own feedback preprocessors, as dotted names."""
    defaults = GenerateFeedback.class_traits()["preprocessors"].default()
    return [dotted_name(HideHiddenTests), *(dotted_name(cls) for cls in defaults)]


def generate_feedback(
    course: Path, assignment: str, students: list[str] | None = None, *, config: Path | None = None,
    db_url: str | None = None,
) -> list[Path]:
    """nbgrader's ``generate_feedback`` without hidden tests; the HTML files it wrote.

    Feedback is generated for ``students`` (default: every autograded student) into
    nbgrader's ``feedback/<student>/<assignment>/`` folder, replacing earlier feedback.
    The preprocessors are set on the command line, so no configuration file can leave
    :class:`HideHiddenTests` out.
    """
    course = Path(course).resolve()
    options = ["--force", f"--GenerateFeedback.preprocessors={feedback_preprocessors()!r}"]
    if students is None:
        run_nbgrader(course, "generate_feedback", assignment, *options, config=config, db_url=db_url)
    for student in students or []:
        run_nbgrader(course, "generate_feedback", assignment, *options, f"--student={student}", config=config,
                     db_url=db_url)
    patterns = ["*"] if students is None else students
    paths = sorted(p for s in patterns for p in (course / "feedback").glob(f"{s}/{assignment}/*.html"))
    if patterns and not paths:
        raise RuntimeError(f"nbgrader generate_feedback wrote no HTML in {course / 'feedback'} for {assignment}")
    return paths


# --------------------------------------------------------------------------- findings


def integrity_folder(course: Path, assignment: str) -> Path:
    return Path(course) / "integrity" / assignment


def student_findings_files(course: Path, assignment: str) -> dict[str, list[Path]]:
    """Each student's findings files (pre-flight first, then the run), by student id."""
    by_student: dict[str, list[Path]] = {}
    folder = integrity_folder(course, assignment)
    for suffix in FINDINGS_SUFFIXES:
        for path in sorted(folder.glob(f"*{suffix}")):
            by_student.setdefault(path.name.removesuffix(suffix), []).append(path)
    return dict(sorted(by_student.items()))


def student_findings(course: Path, assignment: str, student: str) -> list[Finding]:
    """Every finding about one student's submission, pre-flight first."""
    folder = integrity_folder(course, assignment)
    paths = [folder / f"{student}{suffix}" for suffix in FINDINGS_SUFFIXES]
    return [finding for path in paths if path.exists() for finding in read_findings(path)[1]]


def integrity_rows(course: Path, assignment: str) -> list[dict]:
    """One row per finding of the assignment: student, notebook, vector, meaning, cell, detail, source."""
    rows = []
    for student, paths in student_findings_files(course, assignment).items():
        for path in paths:
            context, findings = read_findings(path)
            for finding in findings:
                rows.append(
                    {
                        "student": clean_text(student),
                        "notebook": clean_text(str(context.get("notebook", ""))),
                        "vector": finding.vector,
                        "meaning": VECTORS[finding.vector],
                        "cell": finding.cell,
                        "detail": finding.detail,
                        "source": finding.source,
                    }
                )
    return rows


# --------------------------------------------------------------------------- grades CSV


def export_grades(course: Path, out: Path, *, config: Path | None = None, db_url: str | None = None) -> Path:
    """nbgrader's CSV export of every assignment and student to ``out``, with integrity columns.

    ``integrity_flags`` counts the findings about the submission (0 without findings files)
    and ``integrity_vectors`` lists their vectors, sorted and ``;``-joined.
    """
    course, out = Path(course).resolve(), Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    run_nbgrader(course, "export", f"--to={out}", f"--ExportApp.plugin_class={dotted_name(CsvExportPlugin)}",
                 config=config, db_url=db_url)
    with out.open(newline="") as f:
        reader = csv.DictReader(f)
        columns, rows = [*reader.fieldnames, *INTEGRITY_COLUMNS], list(reader)
    for row in rows:
        findings = student_findings(course, row["assignment"], row["student_id"])
        row["integrity_flags"] = len(findings)
        row["integrity_vectors"] = ";".join(sorted({f.vector for f in findings}))
    with out.open("w", newline="", encoding="utf-8", errors="replace") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: spreadsheet_safe(v) for k, v in row.items()} for row in rows)
    return out


# --------------------------------------------------------------------------- integrity report


REPORT_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 75em; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.number { text-align: right; }
td.detail { white-space: pre-wrap; }
"""


def write_integrity_report(
    course: Path, assignment: str, *, scores: dict[str, float] | None = None
) -> tuple[Path, Path]:
    """Write ``report.csv`` and ``report.html`` in the assignment's integrity folder; their paths.

    Students who have findings files or a score count as checked; only those with
    findings get a section in the HTML, the most findings first.
    """
    folder = integrity_folder(course, assignment)
    folder.mkdir(parents=True, exist_ok=True)
    rows = integrity_rows(course, assignment)
    checked = set(student_findings_files(course, assignment)) | set(scores or {})

    csv_path = folder / "report.csv"
    with csv_path.open("w", newline="", encoding="utf-8", errors="replace") as f:
        writer = csv.DictWriter(f, fieldnames=REPORT_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: spreadsheet_safe(v) for k, v in row.items()} for row in rows)

    html_path = folder / "report.html"
    html_path.write_text(report_html(assignment, rows, len(checked), scores), encoding="utf-8", errors="replace")
    return csv_path, html_path


def report_html(assignment: str, rows: list[dict], checked: int, scores: dict[str, float] | None) -> str:
    """The integrity report as one self-contained HTML page."""
    title = f"Integrity report: {assignment}"
    by_student: dict[str, list[dict]] = {}
    for row in rows:
        by_student.setdefault(row["student"], []).append(row)
    flagged = sorted(by_student.items(), key=lambda item: (-len(item[1]), item[0]))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{REPORT_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{checked} students checked, {len(by_student)} with findings, {len(rows)} findings in all.</p>",
    ]
    if not rows:
        parts.append("<p>No findings: no submission of this assignment was flagged.</p>")
    else:
        parts.append(summary_table(rows))
        for student, student_rows in flagged:
            parts.append(student_section(student, student_rows, scores))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def summary_table(rows: list[dict]) -> str:
    """Each vector seen, its meaning and how many students it flagged, the most frequent first."""
    students = Counter(vector for vector, _ in {(row["vector"], row["student"]) for row in rows})
    lines = ["<h2>Summary</h2>", "<table>", "<tr><th>vector</th><th>meaning</th><th>students</th></tr>"]
    for vector, count in sorted(students.items(), key=lambda item: (-item[1], item[0])):
        lines.append(
            f"<tr><td><code>{html.escape(vector)}</code></td><td>{html.escape(VECTORS[vector])}</td>"
            f'<td class="number">{count}</td></tr>'
        )
    lines.append("</table>")
    return "\n".join(lines)


def student_section(student: str, rows: list[dict], scores: dict[str, float] | None) -> str:
    """One flagged student: their score (when known) and a row per finding."""
    heading = html.escape(student)
    if scores is not None:
        score = scores.get(student)
        heading += f" (score: {'not graded' if score is None else f'{score:g}'})"
    columns = ("notebook", "source", "vector", "cell", "detail")
    lines = [
        f"<h2>{heading}</h2>",
        f"<p>{len(rows)} finding{'s' if len(rows) != 1 else ''}</p>",
        "<table>",
        "<tr>" + "".join(f"<th>{c}</th>" for c in columns) + "</tr>",
    ]
    for row in rows:
        cells = "".join(f'<td class="{c}">{html.escape(str(row[c]))}</td>' for c in columns)
        lines.append(f"<tr>{cells}</tr>")
    lines.append("</table>")
    return "\n".join(lines)
