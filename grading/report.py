"""What the pipeline hands out: feedback without hidden tests, the grades CSV, the integrity report.

``generate_feedback``
    nbgrader's ``generate_feedback`` with :class:`HideHiddenTests` in front of its preprocessors:
    students see their scores, the visible tests, their messages and whether the hidden tests
    passed, never the hidden tests, their inputs, outputs or messages.
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

from nbformat.notebooknode import NotebookNode
from nbgrader import utils
from nbgrader.converters import GenerateFeedback
from nbgrader.plugins import CsvExportPlugin
from nbgrader.preprocessors import ClearHiddenTests

from grading.findings import VECTORS, Finding, read_findings, spreadsheet_safe
from grading.wire import clean_text

PACKAGE_PARENT = Path(__file__).resolve().parents[1]  # nbgrader's processes import ``grading`` from there
HIDDEN_TESTS_NOTE = "(hidden tests: not shown)"
FINDINGS_SUFFIXES = (".preflight.json", ".run.json")  # a submission's findings files, in the pipeline's order
REPORT_FIELDS = ("student", "notebook", "vector", "meaning", "cell", "detail", "source")


def run_nbgrader(course: Path, command: str, *args: str, config: Path | None = None,
                 db_url: str | None = None) -> subprocess.CompletedProcess:
    """``nbgrader <command>`` in the course folder, with ``grading`` importable; RuntimeError if it fails.
    ``config``: an extra configuration file (the course's ``nbgrader_config.py`` is read too)."""
    argv = [sys.executable, "-m", "nbgrader", command, *args, f"--CourseDirectory.root={course}"]
    if config is not None:
        argv.append(f"--config={Path(config).resolve()}")
    if db_url is not None:
        argv.append(f"--CourseDirectory.db_url={db_url}")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PACKAGE_PARENT), *filter(None, [os.environ.get(
        "PYTHONPATH")])])}
    proc = subprocess.run(argv, cwd=course, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"nbgrader {command} failed (exit {proc.returncode}) in {course}:\n"
                           f"{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return proc


def dotted_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# --------------------------------------------------------------------------- feedback


class HideHiddenTests(ClearHiddenTests):
    """Feedback preprocessor: nothing of the hidden tests reaches the student.

    Each hidden-test region (nbgrader's ``ClearHiddenTests`` delimiters) becomes one line,
    ``# (hidden tests: not shown)``. The outputs of a test cell's hidden part (listed by
    :mod:`grading.execute` in ``grading.hidden_outputs``: what the tests and the student's code
    printed, errors, the cell's value) become one line saying whether the hidden tests passed; a
    cell with hidden tests but no such list keeps no output. Tracebacks keep only ``ename: evalue``
    (their frames quote source lines); grade cells keep only nbgrader's grading metadata.
    """

    def preprocess_cell(self, cell: NotebookNode, resources, cell_index: int):
        note = f"# {HIDDEN_TESTS_NOTE}" if cell.cell_type == "code" else HIDDEN_TESTS_NOTE
        kept, inside, removed = [], False, False
        for line in cell.source.split("\n"):
            if self.begin_test_delimeter in line:
                kept += [] if inside else [line[:len(line) - len(line.lstrip())] + note]
                inside = removed = True
            elif self.end_test_delimeter in line:
                inside = False
            elif not inside:
                kept.append(line)
        cell.source = "\n".join(kept)
        if cell.cell_type == "code":
            listed = cell.metadata.get("grading", {}).get("hidden_outputs")
            if isinstance(listed, list):  # graded by grading.execute: it says which outputs, and whether they ran
                hidden, ran = set(listed), cell.metadata["grading"].get("hidden_ran", True) is True
            else:  # graded elsewhere: no output of a cell with hidden tests can be shown
                hidden, ran = set(range(len(cell.outputs))) if removed else set(), False
            failed = any(out.output_type == "error" or out.get("name") == "stderr"
                         for i, out in enumerate(cell.outputs) if i in hidden)
            cell.outputs = [out for i, out in enumerate(cell.outputs) if i not in hidden]
            if ran or hidden:
                verdict = "failed (what they checked is not shown)" if failed else "passed"
                cell.outputs.append(NotebookNode(output_type="stream", name="stdout", text=f"hidden tests: {verdict}\n"))
            for output in cell.outputs:
                if output.output_type == "error":
                    output.traceback = [f"{output.ename}: {output.evalue}"]
        if utils.is_grade(cell):  # nbgrader's metadata only, without its checksum (a hash of the hidden tests)
            grading = {k: v for k, v in cell.metadata.get("nbgrader", {}).items() if k != "checksum"}
            cell.metadata = NotebookNode({"nbgrader": NotebookNode(grading)})
        return cell, resources


def generate_feedback(course: Path, assignment: str, students: list[str] | None = None, *,
                      config: Path | None = None, db_url: str | None = None) -> list[Path]:
    """nbgrader's ``generate_feedback`` without hidden tests, for ``students`` (default: every
    autograded student), into ``feedback/<student>/<assignment>/``; the HTML files it wrote. The
    preprocessors are set on the command line, so no configuration file can leave out
    :class:`HideHiddenTests`."""
    course = Path(course).resolve()
    preprocessors = [dotted_name(HideHiddenTests)] + [dotted_name(cls) for cls in GenerateFeedback.class_traits()[
        "preprocessors"].default()]
    options = ["--force", f"--GenerateFeedback.preprocessors={preprocessors!r}"]
    for student in [None] if students is None else students:
        run_nbgrader(course, "generate_feedback", assignment, *options, *[f"--student={student}"] * bool(student),
                     config=config, db_url=db_url)
    patterns = ["*"] if students is None else students
    paths = sorted(p for s in patterns for p in (course / "feedback").glob(f"{s}/{assignment}/*.html"))
    if patterns and not paths:
        raise RuntimeError(f"nbgrader generate_feedback wrote no HTML in {course / 'feedback'} for {assignment}")
    return paths


# --------------------------------------------------------------------------- findings, grades CSV


def student_findings_files(course: Path, assignment: str) -> dict[str, list[Path]]:
    """Each student's findings files (pre-flight first, then the run), by student id."""
    by_student: dict[str, list[Path]] = {}
    for suffix in FINDINGS_SUFFIXES:
        for path in sorted((Path(course) / "integrity" / assignment).glob(f"*{suffix}")):
            by_student.setdefault(path.name.removesuffix(suffix), []).append(path)
    return dict(sorted(by_student.items()))


def integrity_rows(course: Path, assignment: str) -> list[dict]:
    """One row per finding of the assignment: student, notebook, vector, meaning, cell, detail, source."""
    rows = []
    for student, paths in student_findings_files(course, assignment).items():
        for path in paths:
            context, findings = read_findings(path)
            rows += [{"student": clean_text(student), "notebook": str(context.get("notebook", "")), "vector": f.vector,
                      "meaning": VECTORS[f.vector], "cell": f.cell, "detail": f.detail, "source": f.source}
                     for f in findings]
    return rows


def export_grades(course: Path, out: Path, *, config: Path | None = None, db_url: str | None = None) -> Path:
    """nbgrader's CSV export of every assignment and student to ``out``, with ``integrity_flags`` (the
    number of findings, 0 without findings files) and ``integrity_vectors`` (their vectors, sorted,
    ``;``-joined)."""
    course, out = Path(course).resolve(), Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    run_nbgrader(course, "export", f"--to={out}", f"--ExportApp.plugin_class={dotted_name(CsvExportPlugin)}",
                 config=config, db_url=db_url)
    with out.open(newline="") as f:
        reader = csv.DictReader(f)
        columns, rows = [*reader.fieldnames, "integrity_flags", "integrity_vectors"], list(reader)
    for row in rows:
        folder = course / "integrity" / row["assignment"]
        findings: list[Finding] = [f for suffix in FINDINGS_SUFFIXES if (folder / f"{row['student_id']}{suffix}").exists()
                                   for f in read_findings(folder / f"{row['student_id']}{suffix}")[1]]
        row["integrity_flags"], row["integrity_vectors"] = len(findings), ";".join(sorted({f.vector for f in findings}))
    _write_csv(out, columns, rows)
    return out


def _write_csv(path: Path, columns, rows: list[dict]) -> None:
    """Rows as CSV, each text that a spreadsheet would run as a formula made harmless."""
    with path.open("w", newline="", encoding="utf-8", errors="replace") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: spreadsheet_safe(v) for k, v in row.items()} for row in rows)


# --------------------------------------------------------------------------- integrity report

REPORT_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 75em; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.number { text-align: right; }
td.detail { white-space: pre-wrap; }
"""


def write_integrity_report(course: Path, assignment: str, *, scores: dict[str, float] | None = None) -> tuple[Path, Path]:
    """``report.csv`` and ``report.html`` in the assignment's integrity folder; their paths. Students
    with findings files or a score count as checked; those with findings get a section in the HTML,
    the most findings first."""
    folder = Path(course) / "integrity" / assignment
    folder.mkdir(parents=True, exist_ok=True)
    rows = integrity_rows(course, assignment)
    _write_csv(folder / "report.csv", REPORT_FIELDS, rows)
    by_student: dict[str, list[dict]] = {}
    for row in rows:
        by_student.setdefault(row["student"], []).append(row)
    checked = len(set(student_findings_files(course, assignment)) | set(scores or {}))
    title = html.escape(f"Integrity report: {assignment}")
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{title}</title><style>{REPORT_STYLE}</style></head><body>", f"<h1>{title}</h1>",
             f"<p>{checked} students checked, {len(by_student)} with findings, {len(rows)} findings in all.</p>"]
    if not rows:
        parts.append("<p>No findings: no submission of this assignment was flagged.</p>")
    else:  # each vector seen, its meaning and how many students it flagged, the most frequent first
        counts = Counter(vector for vector, _ in {(row["vector"], row["student"]) for row in rows})
        parts += ["<h2>Summary</h2>", "<table>", "<tr><th>vector</th><th>meaning</th><th>students</th></tr>"]
        parts += [f"<tr><td><code>{html.escape(vector)}</code></td><td>{html.escape(VECTORS[vector])}</td>"
                  f'<td class="number">{count}</td></tr>' for vector, count in sorted(counts.items(),
                                                                                      key=lambda i: (-i[1], i[0]))]
        parts.append("</table>")
    columns = ("notebook", "source", "vector", "cell", "detail")
    for student, student_rows in sorted(by_student.items(), key=lambda item: (-len(item[1]), item[0])):
        score = (scores or {}).get(student)
        heading = html.escape(student) + ("" if scores is None else
                                          f" (score: {'not graded' if score is None else f'{score:g}'})")
        parts += [f"<h2>{heading}</h2>", f"<p>{len(student_rows)} finding{'s' * (len(student_rows) != 1)}</p>",
                  "<table>", "<tr>" + "".join(f"<th>{c}</th>" for c in columns) + "</tr>"]
        parts += ["<tr>" + "".join(f'<td class="{c}">{html.escape(str(row[c]))}</td>' for c in columns) + "</tr>"
                  for row in student_rows]
        parts.append("</table>")
    (folder / "report.html").write_text("\n".join([*parts, "</body></html>\n"]), encoding="utf-8", errors="replace")
    return folder / "report.csv", folder / "report.html"
