"""``IsolatedExecute``: nbgrader's ``Execute`` step, with the student's code kept apart.

Registered in ``nbgrader_config.py`` in place of ``Execute``, so that ``nbgrader autograde`` and
``python -m grading autograde`` both grade this way. For one notebook:

1. cells are split by their nbgrader role: **test** cells run in the grader's own process;
   **solution** cells and cells the student added run in the student's sandboxed process
   (:mod:`grading.sandbox`); **locked** instructor cells (setup, data) run in both;
2. after each solution cell, the names that the *reference* solution cell defines are bound in
   the grader's namespace to :class:`~grading.remote.Proxy` objects (or to the student's value,
   when it is plain data);
3. test cells run against those proxies, where the student's code cannot reach numpy, builtins,
   IPython or the gradebook. Their visible and hidden parts run one after the other, and the
   outputs of the hidden part are listed (cell metadata ``grading.hidden_outputs``) so that
   feedback leaves them out;
4. a function that breaks its exercise's rule (``integrity.toml``: the static scan, or the watch
   in the student's process) raises ``ForbiddenOperation`` in every test cell that used it;
5. findings (static scan, the student's process's observations, time-outs and deaths) go to
   ``integrity/<assignment>/<student>.run.json``; nothing the student's process says can remove
   the static scan's.
"""

from __future__ import annotations

import ast
import atexit
import builtins
import os
import re
from pathlib import Path

import nbformat
from IPython.core.inputtransformer2 import TransformerManager
from nbgrader import utils
from nbgrader.preprocessors import ClearHiddenTests, Execute
from traitlets import Bool, Float, Integer

from grading import scan
from grading.findings import Finding, write_findings
from grading.remote import Proxy, Runner, Session, StudentProcessGone, install_runner
from grading.sandbox import Limits, Sandbox, SandboxUnavailable, pinned_environment
from grading.student import Capture, make_shell

_SANDBOXES: dict[Limits, Sandbox] = {}  # one warm fork server per limits, for the whole process
_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]*")


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
    memory_bytes = Integer(3 * 2**30, help="Memory for the student's processes and files, above the imports.").tag(
        config=True)
    processes = Integer(64, help="Processes and threads the student's process may have.").tag(config=True)
    disk_bytes = Integer(256 * 2**20, help="Size of each writable folder of the sandbox.").tag(config=True)
    output_bytes = Integer(2**20, help="Outputs kept per notebook; the rest is cut.").tag(config=True)
    worker = Integer(0, help="Worker number (parallel grading): picks the sandbox's user id.").tag(config=True)
    write_findings = Bool(True, help="Write integrity/<assignment>/<student>.run.json.").tag(config=True)

    def preprocess(self, nb, resources):
        os.environ.update(pinned_environment())  # course cells make the same fixtures here and in the sandbox
        info = resources.get("nbgrader", {})
        assignment, notebook, student = info.get("assignment", ""), info.get("notebook", ""), info.get("student")
        course = Path(self.config.CourseDirectory.get("root", ".")).resolve()
        source = course / self.config.CourseDirectory.get("source_directory", "source") / assignment
        limits = Limits(cell_seconds=self.cell_seconds, notebook_seconds=self.notebook_seconds,
                        memory_bytes=self.memory_bytes, processes=self.processes, disk_bytes=self.disk_bytes,
                        output_bytes=self.output_bytes)
        hidden = ClearHiddenTests(config=self.config)
        run = NotebookRun(nb, shared_sandbox(limits, self.worker), limits, scan.load_rules(source) if assignment else [],
                          reference_exports(source / f"{notebook}.ipynb"),
                          (hidden.begin_test_delimeter, hidden.end_test_delimeter))
        try:
            run.execute()
        except SandboxUnavailable:  # the grading machine's fault, not the student's: no silent zeros
            raise
        except Exception as error:  # a grader failure must not stop the batch: this notebook is marked
            self.log.exception("grading %s of %s failed", notebook, student)
            run.findings.append(Finding("kernel-died", "", f"the grader failed on this notebook: {error!r}", "sandbox"))
            for cell in nb.cells:
                if cell_role(cell) == "test" and not cell.get("outputs"):
                    cell.outputs = [_error_output("GraderError", f"this notebook could not be graded: {error!r}")]
        if self.write_findings and assignment and student:
            write_findings(course / "integrity" / assignment / f"{student}.run.json", run.findings, student=student,
                           assignment=assignment, notebook=f"{notebook}.ipynb")
        return nb, resources


def cell_role(cell) -> str:
    """"test" (grader only), "solution", "course" (both), "student" (student only) or "text"."""
    if cell.cell_type != "code":
        return "text"
    if utils.is_solution(cell):
        return "solution"
    return "test" if utils.is_grade(cell) else "course" if utils.is_locked(cell) else "student"


def cell_label(index: int, cell) -> str:
    return str(cell.metadata.get("nbgrader", {}).get("grade_id") or f"cell {index}")


def reference_exports(source_notebook: Path) -> dict[str, list[str]]:
    """Top-level names each solution cell of the reference notebook defines, by grade id."""
    cells = nbformat.read(source_notebook, as_version=4).cells if source_notebook.is_file() else []
    return {cell_label(0, c): scan.defined_names(c.source) for c in cells if cell_role(c) == "solution"}


class NotebookRun:
    """One notebook, executed with the student's code in its own process."""

    def __init__(self, nb, sandbox: Sandbox, limits: Limits, rules, exports: dict[str, list[str]],
                 delimiters=("BEGIN HIDDEN TESTS", "END HIDDEN TESTS")):
        self.nb, self.sandbox, self.limits, self.rules, self.exports = nb, sandbox, limits, rules, exports
        self.delimiters = delimiters
        self.findings: list[Finding] = []
        self.budget = limits.output_bytes  # output bytes left for the student's cells (and, apart, for the tests)
        self.tests_budget = limits.output_bytes
        self.shell = make_shell()
        self.shell.reset(new_session=False)  # the grader's namespace, emptied for this notebook

    def execute(self) -> list[Finding]:
        cells = self.nb.cells
        owned = [(cell_label(i, c), c.source) for i, c in enumerate(cells) if cell_role(c) in ("solution", "student")]
        self.findings = scan.scan_student_code(owned)
        rules = {e: {"exercise": e, "words": sorted(r.words()), "modules": list(r.modules), "why": r.why}
                 for r in self.rules for e in r.exercises}
        forbidden = scan.forbidden_uses(self.rules, owned, self.exports)
        self.findings += [Finding("forbidden-op", e, "; ".join(uses), "static") for e, uses in forbidden.items()]
        session = Session(self.sandbox, self.limits, rules)
        session.forbidden.update({e: f"uses {'; '.join(uses)}: {rules[e]['why']}" for e, uses in forbidden.items()})
        install_runner(Runner(session))
        try:
            for index, cell in enumerate(cells):
                role, label = cell_role(cell), cell_label(index, cell)
                if role == "text":
                    continue
                cell.execution_count = session.cell = index + 1
                if role in ("solution", "student", "course"):
                    cell.outputs = self.student_cell(session, label, cell.source, role)
                if role in ("test", "course"):
                    cell.outputs = self.test_cell(cell, label)
            self.findings += session.observations()
        finally:
            install_runner(None)
            session.close()
        self.findings += session.findings
        self.zero_forbidden(session)
        return self.findings

    def student_cell(self, session: Session, label: str, source: str, role: str) -> list:
        exports = self.exports.get(label, []) if role == "solution" else []
        try:
            reply = session.run_cell(label, source, owned=role != "course", exports=exports)
        except StudentProcessGone as gone:
            reply = {"outputs": [{"output_type": "error", "ename": "StudentProcessGone", "evalue": str(gone),
                                  "traceback": [str(gone)]}]}
        if role == "solution":  # the names the reference defines (without a reference: the new functions)
            defined = [n for n in reply.get("defined", []) if isinstance(n, str)]
            names = exports or [n for n in defined if n not in self.shell.user_ns and not hasattr(builtins, n)]
            values = reply.get("values") if isinstance(reply.get("values"), dict) else {}
            for name in names:
                self.shell.user_ns[name] = values[name] if name in values else Proxy(session, name, label)
        dropped: list[str] = []
        outputs = [o for o in (_output(raw, dropped) for raw in reply.get("outputs", [])[:1000]) if o]
        if dropped:
            self.findings.append(Finding("rich-output", label, f"outputs in {', '.join(sorted(set(dropped)))[:300]} "
                                         "were left out (only text and PNG or JPEG images are kept)", "sandbox"))
        kept = []  # the student's process keeps to the budget; this holds even if it did not
        for output in outputs:
            if output.output_type == "error" or len(str(output)) <= self.budget:
                kept.append(output)
                self.budget = max(0, self.budget - len(str(output)))
        cut = nbformat.v4.new_output("stream", name="stdout", text="[outputs over the grader's limit were cut]\n")
        return kept + [cut] * (len(kept) < len(outputs))

    def test_cell(self, cell, label: str) -> list:
        """Run a test (or course) cell here, its visible and hidden parts one after the other."""
        outputs, hidden, ran = [], [], False
        parts = _parts(cell.source, self.delimiters)
        for number, (is_hidden, source) in enumerate(parts):
            with Capture(self.shell, self.tests_budget) as captured:
                self.shell.code_name = f"<test cell {label}>"
                result = self.shell.run_cell(source, store_history=False, silent=number < len(parts) - 1)
            self.tests_budget -= captured.size
            got = [_output(o, execution_count=cell.execution_count) for o in captured.outputs()]
            if is_hidden:
                hidden += range(len(outputs), len(outputs) + len(got))
                ran = True
            outputs += got
            if result.error_before_exec or result.error_in_exec:
                break
        if any(is_hidden for is_hidden, _ in parts):
            cell.metadata["grading"] = {"hidden_outputs": hidden, "hidden_ran": ran}
        return outputs

    def zero_forbidden(self, session: Session) -> None:
        """Test cells that used an exercise found breaking its rule at run time fail, even those before."""
        for number, exercises in session.used.items():
            broken = sorted(exercises & set(session.forbidden))
            cell = self.nb.cells[number - 1] if 0 < number <= len(self.nb.cells) else None
            if not broken or cell is None or cell_role(cell) != "test" or any(
                    o.output_type == "error" and o.ename == "ForbiddenOperation" for o in cell.outputs):
                continue
            cell.outputs.insert(0, _error_output("ForbiddenOperation", "; ".join(f"{e} {session.forbidden[e]}"
                                                                                 for e in broken)))
            if grading := cell.metadata.get("grading"):
                grading["hidden_outputs"] = [i + 1 for i in grading["hidden_outputs"]]


def _parts(source: str, delimiters: tuple[str, str]) -> list[tuple[bool, str]]:
    """A test cell's source as (hidden, code) parts in order; one part when they cannot be run apart
    (a hidden region inside a block, a cell magic, a part that does not parse on its own)."""
    begin, end = delimiters
    parts, current, hidden, had_hidden = [], [], False, False
    for line in source.splitlines(keepends=True):
        marker = begin in line or end in line
        if marker and line[:1] in (" ", "\t"):
            return [(True, source)]
        if marker and (begin in line) != hidden:
            parts.append((hidden, "".join(current)))
            current, hidden = [], begin in line
            had_hidden = had_hidden or hidden
        current.append(line)
    parts = [(h, code) for h, code in [*parts, (hidden, "".join(current))] if code.strip()]
    if not had_hidden:
        return [(False, source)]
    try:
        for _, code in parts:
            ast.parse(TransformerManager().transform_cell(code))
    except (SyntaxError, ValueError):
        return [(True, source)]
    return [(True, source)] if source.lstrip().startswith("%%") else parts


def _error_output(ename: str, evalue: str, traceback: list | None = None):
    return nbformat.v4.new_output("error", ename=ename, evalue=evalue,
                                  traceback=[str(t) for t in (traceback or [f"{ename}: {evalue}"])])


def _output(raw, dropped: list[str] | None = None, execution_count=None):
    """An nbformat output rebuilt field by field from a captured one (untrusted when it comes from the
    student's process); rich formats other than text and PNG/JPEG images are left out and listed in
    ``dropped``."""
    if not isinstance(raw, dict):
        return None
    kind = raw.get("output_type")
    if kind == "stream":
        return nbformat.v4.new_output("stream", name="stderr" if raw.get("name") == "stderr" else "stdout",
                                      text=str(raw.get("text", "")))
    if kind == "error":
        trace = raw.get("traceback")
        return _error_output(str(raw.get("ename", "Error"))[:200], str(raw.get("evalue", "")),
                             [str(t) for t in trace[:50]] if isinstance(trace, list) else None)
    data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    kept = {mime: data[mime] for mime in ("text/plain", "image/png", "image/jpeg")
            if isinstance(data.get(mime), str) and (mime == "text/plain" or _BASE64.fullmatch(data[mime]))}
    left_out = sorted(str(m) for m in data if m not in kept)
    if dropped is not None:
        dropped += left_out
    if left_out and "text/plain" not in kept:
        kept["text/plain"] = f"[an output in {', '.join(left_out)} was left out]"
    if not kept:
        return None
    if kind == "execute_result":
        return nbformat.v4.new_output("execute_result", data=kept, metadata={}, execution_count=execution_count)
    return nbformat.v4.new_output("display_data", data=kept, metadata={})
