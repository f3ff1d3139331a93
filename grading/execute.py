"""``IsolatedExecute``: nbgrader's ``Execute`` step, with the student's code kept apart.

Registered in ``nbgrader_config.py`` in place of ``Execute``, so that ``nbgrader
autograde`` and ``python -m grading autograde`` both grade this way. For one notebook:

1. the cells are split by their nbgrader role: **test** cells (grade cells) run in the
   grader's own process; **solution** cells and cells the student added run in the
   student's sandboxed process (:mod:`grading.sandbox`); **locked** instructor cells
   (setup, data) run in both;
2. after each solution cell, the names that the *reference* solution cell defines are
   bound, in the grader's namespace, to :class:`~grading.remote.StudentFunction`
   proxies (or to the plain value, for non-functions);
3. test cells run against those proxies: every comparison happens here, where the
   student's code cannot reach numpy, builtins, IPython or the gradebook;
4. a function that breaks its exercise's static rule (``integrity.toml``) is bound to a
   proxy that raises, so its tests score 0;
5. findings (static scan, the student's process's own observations, time-outs and
   deaths) are written to ``integrity/<assignment>/<student>.run.json``.

Outputs go back on the cells exactly where nbgrader's later steps (``IgnorePattern``,
``SaveAutoGrades``) expect them.
"""

from __future__ import annotations

import ast
import atexit
import builtins
from pathlib import Path

import nbformat
from nbgrader.preprocessors import Execute
from traitlets import Bool, Float, Integer

from grading import scan
from grading.findings import Finding, write_findings
from grading.remote import StudentFunction, StudentProcessGone, StudentSession
from grading.sandbox import Limits, Sandbox, SandboxUnavailable

_SANDBOXES: dict[Limits, Sandbox] = {}  # one warm fork server per limits, for the whole process


def shared_sandbox(limits: Limits, worker: int = 0) -> Sandbox:
    """The process's fork server for these limits (started on first use, restarted if it died)."""
    if not _SANDBOXES:
        atexit.register(close_sandboxes)
    if limits not in _SANDBOXES:
        _SANDBOXES[limits] = Sandbox(limits, worker=worker)
    return _SANDBOXES[limits]


def close_sandboxes() -> None:
    """Stop this process's fork servers (workers call it: their exit skips atexit)."""
    while _SANDBOXES:
        _SANDBOXES.popitem()[1].close()


class IsolatedExecute(Execute):
    """Executes a submission with the student's code in a sandbox and the tests outside it."""

    cell_seconds = Float(120.0, help="Wall time for one student cell or one call from a test.").tag(config=True)
    notebook_seconds = Float(600.0, help="Wall time for all of one notebook's student code.").tag(config=True)
    memory_bytes = Integer(3 * 2**30, help="Memory for the student's process above its imports.").tag(config=True)
    processes = Integer(64, help="Processes and threads the student's process may have.").tag(config=True)
    output_bytes = Integer(2**20, help="Outputs kept per student cell; the rest is cut.").tag(config=True)
    worker = Integer(0, help="Worker number (parallel grading): picks the sandbox's user id.").tag(config=True)
    write_findings = Bool(True, help="Write integrity/<assignment>/<student>.run.json.").tag(config=True)

    def limits(self) -> Limits:
        return Limits(cell_seconds=self.cell_seconds, notebook_seconds=self.notebook_seconds,
                      memory_bytes=self.memory_bytes, processes=self.processes, output_bytes=self.output_bytes)

    def preprocess(self, nb, resources):
        info = resources.get("nbgrader", {})
        course = Path(self.config.CourseDirectory.get("root", ".")).resolve()
        source_dir = self.config.CourseDirectory.get("source_directory", "source")
        assignment, notebook = info.get("assignment", ""), info.get("notebook", "")
        rules = scan.load_rules(course / source_dir / assignment) if assignment else []
        exports = _reference_exports(course / source_dir / assignment / f"{notebook}.ipynb")
        run = NotebookRun(nb, shared_sandbox(self.limits(), self.worker), self.limits(), rules, exports)
        try:
            findings = run.execute()
        except SandboxUnavailable:  # the grading machine's fault, not the student's: no silent zeros
            raise
        except Exception as error:  # a grader failure must not stop the batch: this notebook is marked
            self.log.exception("grading %s of %s failed", notebook, info.get("student"))
            findings = [Finding("kernel-died", "", f"the grader failed on this notebook: {error!r}", "sandbox")]
            for cell in nb.cells:
                if cell_role(cell) == "test" and not cell.get("outputs"):
                    cell.outputs = [_error_output("GraderError", f"this notebook could not be graded: {error!r}")]
        if self.write_findings and assignment and info.get("student"):
            write_findings(course / "integrity" / assignment / f"{info['student']}.run.json", findings,
                           student=info["student"], assignment=assignment, notebook=f"{notebook}.ipynb")
        return nb, resources


def cell_role(cell) -> str:
    """"test" (grader only), "solution", "course" (both), "student" (student only) or "text"."""
    if cell.cell_type != "code":
        return "text"
    meta = cell.metadata.get("nbgrader", {})
    if meta.get("solution"):
        return "solution"
    if meta.get("grade"):
        return "test"
    if meta.get("locked"):
        return "course"
    return "student"


def cell_label(index: int, cell) -> str:
    return cell.metadata.get("nbgrader", {}).get("grade_id") or f"cell {index}"


def _reference_exports(source_notebook: Path) -> dict[str, list[str]]:
    """Top-level names each solution cell of the reference notebook defines, by grade id."""
    if not source_notebook.is_file():
        return {}
    exports = {}
    for cell in nbformat.read(source_notebook, as_version=4).cells:
        if cell_role(cell) == "solution":
            exports[cell_label(0, cell)] = _defined_names(cell.source)
    return exports


def _defined_names(source: str) -> list[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    names = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names += [t.id for t in targets if isinstance(t, ast.Name)]
    return names


class NotebookRun:
    """One notebook, executed with the student's code in its own process."""

    def __init__(self, nb, sandbox: Sandbox, limits: Limits, rules, exports: dict[str, list[str]]):
        self.nb, self.sandbox, self.limits, self.rules, self.exports = nb, sandbox, limits, rules, exports
        self.shell = _grader_shell()

    def execute(self) -> list[Finding]:
        owned = [(cell_label(i, c), c.source) for i, c in enumerate(self.nb.cells)
                 if cell_role(c) in ("solution", "student")]
        findings = scan.scan_student_code(owned)
        forbidden = scan.forbidden_uses(self.rules, owned) if self.rules else {}
        why = {e: r.why for r in self.rules for e in r.exercises}
        for exercise, uses in forbidden.items():
            findings.append(Finding("forbidden-op", exercise, "; ".join(uses), "static"))
        session = StudentSession(self.sandbox, self.limits)
        try:
            for index, cell in enumerate(self.nb.cells):
                role = cell_role(cell)
                if role == "text":
                    continue
                cell.execution_count = index + 1
                label = cell_label(index, cell)
                if role in ("solution", "student", "course"):
                    cell.outputs = self._run_student_cell(session, label, cell.source, owned=role != "course")
                if role == "solution":
                    self._bind(session, label, forbidden.get(label), why.get(label, ""))
                if role in ("test", "course"):
                    cell.outputs = self._run_grader_cell(cell.source)
            findings += session.observations()
        finally:
            session.close()
        return findings + session.findings

    def _run_student_cell(self, session: StudentSession, label: str, source: str, owned: bool) -> list:
        self.defined = {}
        try:
            reply = session.run_cell(label, source, owned)
        except StudentProcessGone as gone:
            return [_error_output("StudentProcessGone", str(gone))]
        self.defined = reply.get("defined", {})
        return [_clean_output(o) for o in reply.get("outputs", [])]

    def _bind(self, session: StudentSession, label: str, forbidden, why: str) -> None:
        """Bind the names the reference cell defines (or, without a reference, the new functions)."""
        names = self.exports.get(label)
        if names is None:
            names = [n for n, kind in self.defined.items() if kind == "callable"
                     and n not in self.shell.user_ns and not hasattr(builtins, n)]
        for name in names:
            self.shell.user_ns[name] = StudentFunction(session, name, forbidden, why)

    def _run_grader_cell(self, source: str) -> list:
        with _Capture(self.shell) as captured:
            self.shell.run_cell(source, store_history=False)
        return captured.outputs()


# --------------------------------------------------------------------------- the grader's shell


def _grader_shell():
    """A fresh IPython shell namespace in this process, for one notebook's tests."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    if not InteractiveShell.initialized():
        config = Config()
        config.HistoryManager.enabled = False
        config.InteractiveShell.colors = "nocolor"
        GraderShell.instance(config=config)
    shell = InteractiveShell.instance()
    shell.reset(new_session=False)
    return shell


def _make_grader_shell_class():
    from IPython.core.interactiveshell import InteractiveShell

    class _GraderShell(InteractiveShell):
        errors: list = []

        def _showtraceback(self, etype, evalue, stb):
            self.errors.append(_error_output(getattr(etype, "__name__", str(etype)), str(evalue), stb))

    return _GraderShell


GraderShell = _make_grader_shell_class()


class _Capture:
    """stdout, stderr, displays and errors of one grader cell, as nbformat outputs."""

    def __init__(self, shell):
        self.shell = shell

    def __enter__(self):
        from IPython.utils.capture import capture_output

        self.shell.errors = []
        self.capture = capture_output(stdout=True, stderr=True, display=True)
        self.captured = self.capture.__enter__()
        return self

    def __exit__(self, *exc):
        self.capture.__exit__(*exc)
        return False

    def outputs(self) -> list:
        outputs = []
        if self.captured.stdout:
            outputs.append(nbformat.v4.new_output("stream", name="stdout", text=self.captured.stdout))
        if self.captured.stderr:
            outputs.append(nbformat.v4.new_output("stream", name="stderr", text=self.captured.stderr))
        for out in self.captured.outputs:
            outputs.append(nbformat.v4.new_output("display_data", data=dict(out.data), metadata=dict(out.metadata)))
        return outputs + self.shell.errors


def _error_output(ename: str, evalue: str, traceback: list | None = None):
    return nbformat.v4.new_output("error", ename=ename, evalue=evalue,
                                  traceback=[str(t) for t in (traceback or [f"{ename}: {evalue}"])])


def _clean_output(raw: dict):
    """An output from the student's process, rebuilt field by field as a valid nbformat output."""
    kind = raw.get("output_type")
    if kind == "stream":
        name = "stderr" if raw.get("name") == "stderr" else "stdout"
        return nbformat.v4.new_output("stream", name=name, text=str(raw.get("text", "")))
    if kind == "error":
        return _error_output(str(raw.get("ename", "Error")), str(raw.get("evalue", "")),
                             [str(t) for t in raw.get("traceback", [])])
    data = raw.get("data", {})
    return nbformat.v4.new_output("display_data", data={str(k): str(v) for k, v in data.items()}, metadata={})

