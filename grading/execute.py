"""``IsolatedExecute``: nbgrader's ``Execute`` step, with the student's code kept apart.

Registered in ``nbgrader_config.py`` in place of ``Execute``, so that ``nbgrader
autograde`` and ``python -m grading autograde`` both grade this way. For one notebook:

1. the cells are split by their nbgrader role: **test** cells (grade cells) run in the
   grader's own process; **solution** cells and cells the student added run in the
   student's sandboxed process (:mod:`grading.sandbox`); **locked** instructor cells
   (setup, data) run in both;
2. after each solution cell, the names that the *reference* solution cell defines are
   bound, in the grader's namespace, to :class:`~grading.remote.Proxy` objects (or to
   the student's value, when it is plain data);
3. test cells run against those proxies: every comparison happens here, where the
   student's code cannot reach numpy, builtins, IPython or the gradebook. Their visible
   and hidden parts run one after the other, and the outputs of the hidden part are
   marked (cell metadata ``grading.hidden_outputs``) so that feedback leaves them out;
4. a function that breaks its exercise's rule (``integrity.toml``: the static scan, or
   the watch in the student's process) raises ``ForbiddenOperation`` in every test cell
   that used it, so those tests score 0;
5. findings (static scan, the student's process's own observations, time-outs and
   deaths) are written to ``integrity/<assignment>/<student>.run.json``; nothing the
   student's process says can remove the static scan's.
"""

from __future__ import annotations

import ast
import atexit
import builtins
import os
import re
from pathlib import Path

import nbformat
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

    def limits(self) -> Limits:
        return Limits(cell_seconds=self.cell_seconds, notebook_seconds=self.notebook_seconds,
                      memory_bytes=self.memory_bytes, processes=self.processes, disk_bytes=self.disk_bytes,
                      output_bytes=self.output_bytes)

    def preprocess(self, nb, resources):
        os.environ.update(pinned_environment())  # course cells make the same fixtures here and in the sandbox
        info = resources.get("nbgrader", {})
        course = Path(self.config.CourseDirectory.get("root", ".")).resolve()
        source = course / self.config.CourseDirectory.get("source_directory", "source") / info.get("assignment", "")
        assignment, notebook = info.get("assignment", ""), info.get("notebook", "")
        rules = scan.load_rules(source) if assignment else []
        hidden = ClearHiddenTests(config=self.config)
        run = NotebookRun(nb, shared_sandbox(self.limits(), self.worker), self.limits(), rules,
                          reference_exports(source / f"{notebook}.ipynb"),
                          (hidden.begin_test_delimeter, hidden.end_test_delimeter))
        try:
            run.execute()
        except SandboxUnavailable:  # the grading machine's fault, not the student's: no silent zeros
            raise
        except Exception as error:  # a grader failure must not stop the batch: this notebook is marked
            self.log.exception("grading %s of %s failed", notebook, info.get("student"))
            run.findings.append(Finding("kernel-died", "", f"the grader failed on this notebook: {error!r}", "sandbox"))
            for cell in nb.cells:
                if cell_role(cell) == "test" and not cell.get("outputs"):
                    cell.outputs = [_error_output("GraderError", f"this notebook could not be graded: {error!r}")]
        if self.write_findings and assignment and info.get("student"):
            write_findings(course / "integrity" / assignment / f"{info['student']}.run.json", run.findings,
                           student=info["student"], assignment=assignment, notebook=f"{notebook}.ipynb")
        return nb, resources


def cell_role(cell) -> str:
    """"test" (grader only), "solution", "course" (both), "student" (student only) or "text"."""
    if cell.cell_type != "code":
        return "text"
    if utils.is_solution(cell):
        return "solution"
    if utils.is_grade(cell):
        return "test"
    return "course" if utils.is_locked(cell) else "student"


def cell_label(index: int, cell) -> str:
    return str(cell.metadata.get("nbgrader", {}).get("grade_id") or f"cell {index}")


def reference_exports(source_notebook: Path) -> dict[str, list[str]]:
    """Top-level names each solution cell of the reference notebook defines, by grade id."""
    if not source_notebook.is_file():
        return {}
    cells = nbformat.read(source_notebook, as_version=4).cells
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
        self.shell = _grader_shell()

    def execute(self) -> list[Finding]:
        cells = self.nb.cells
        owned = [(cell_label(i, c), c.source) for i, c in enumerate(cells) if cell_role(c) in ("solution", "student")]
        self.findings = scan.scan_student_code(owned)
        forbidden = scan.forbidden_uses(self.rules, owned, self.exports)
        rules = {e: {"exercise": e, "words": sorted(r.words()), "modules": list(r.modules), "why": r.why}
                 for r in self.rules for e in r.exercises}
        for exercise, uses in forbidden.items():
            self.findings.append(Finding("forbidden-op", exercise, "; ".join(uses), "static"))
        session = Session(self.sandbox, self.limits, rules)
        session.forbidden.update({e: f"uses {'; '.join(u)}: {rules[e]['why']}" for e, u in forbidden.items()})
        install_runner(Runner(session))
        try:
            for index, cell in enumerate(cells):
                role = cell_role(cell)
                if role == "text":
                    continue
                cell.execution_count = session.cell = index + 1
                label = cell_label(index, cell)
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

    # ---- the student's cells

    def student_cell(self, session: Session, label: str, source: str, role: str) -> list:
        exports = self.exports.get(label, []) if role == "solution" else []
        try:
            reply = session.run_cell(label, source, owned=role != "course", exports=exports)
        except StudentProcessGone as gone:
            reply = {"outputs": [{"output_type": "error", "ename": "StudentProcessGone", "evalue": str(gone),
                                  "traceback": [str(gone)]}], "defined": []}
        if role == "solution":  # the names the reference defines (without a reference: the new functions)
            defined = [n for n in reply.get("defined", []) if isinstance(n, str)]
            names = exports or [n for n in defined if n not in self.shell.user_ns and not hasattr(builtins, n)]
            values = reply.get("values") if isinstance(reply.get("values"), dict) else {}
            for name in names:
                self.shell.user_ns[name] = values[name] if name in values else Proxy(session, name, label)
        dropped: list[str] = []
        outputs = [o for o in (_student_output(raw, dropped) for raw in reply.get("outputs", [])[:1000]) if o]
        if dropped:
            self.findings.append(Finding("rich-output", label, f"outputs in {', '.join(sorted(set(dropped)))[:300]} "
                                         "were left out (only text and PNG or JPEG images are kept)", "sandbox"))
        return self.within_budget(outputs)

    def within_budget(self, outputs: list) -> list:
        kept, cut = [], False
        for output in outputs:
            size = len(str(output))
            if output.output_type == "error" or size <= self.budget:
                kept.append(output)
                self.budget = max(0, self.budget - size)
            else:
                cut = True
        note = nbformat.v4.new_output("stream", name="stdout", text="[outputs over the grader's limit were cut]\n")
        return kept + [note] * cut

    # ---- the grader's cells

    def test_cell(self, cell, label: str) -> list:
        """Run a test (or course) cell here, its visible and hidden parts one after the other."""
        outputs, hidden, ran = [], [], False
        parts = _parts(cell.source, self.delimiters)
        for number, (is_hidden, source) in enumerate(parts):
            with Capture(self.shell, self.tests_budget) as captured:
                self.shell.code_name = f"<test cell {label}>"
                result = self.shell.run_cell(source, store_history=False, silent=number < len(parts) - 1)
            self.tests_budget -= captured.size
            got = [_grader_output(o, cell.execution_count) for o in captured.outputs()]
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
            if not broken or cell is None or cell_role(cell) != "test":
                continue
            if any(o.output_type == "error" and o.ename == "ForbiddenOperation" for o in cell.outputs):
                continue
            why = "; ".join(f"{e} {session.forbidden[e]}" for e in broken)
            cell.outputs.insert(0, _error_output("ForbiddenOperation", why))
            grading = cell.metadata.get("grading")
            if grading:
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
    parts.append((hidden, "".join(current)))
    parts = [(h, code) for h, code in parts if code.strip()]
    if not had_hidden:
        return [(False, source)]
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        for _, code in parts:
            ast.parse(TransformerManager().transform_cell(code))
    except (SyntaxError, ValueError):
        return [(True, source)]
    return [(True, source)] if source.lstrip().startswith("%%") else parts


def _grader_shell():
    """The grader's IPython shell (one per process), its namespace emptied for a new notebook."""
    shell = make_shell()
    shell.reset(new_session=False)
    return shell


def _error_output(ename: str, evalue: str, traceback: list | None = None):
    return nbformat.v4.new_output("error", ename=ename, evalue=evalue,
                                  traceback=[str(t) for t in (traceback or [f"{ename}: {evalue}"])])


def _grader_output(raw: dict, count):
    kind = raw["output_type"]
    if kind == "stream":
        return nbformat.v4.new_output("stream", name=raw["name"], text=raw["text"])
    if kind == "error":
        return _error_output(raw["ename"], raw["evalue"], raw["traceback"])
    extra = {"execution_count": count} if kind == "execute_result" else {}
    return nbformat.v4.new_output(kind, data=dict(raw["data"]), metadata=dict(raw.get("metadata") or {}), **extra)


def _student_output(raw, dropped: list[str]):
    """An output from the student's process, rebuilt field by field; its HTML, scripts and other rich
    formats are left out (only text and PNG/JPEG images are kept) and listed in ``dropped``."""
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
    dropped += left_out
    if left_out and "text/plain" not in kept:
        kept["text/plain"] = f"[an output in {', '.join(left_out)} was left out]"
    if not kept:
        return None
    if kind == "execute_result":
        return nbformat.v4.new_output("execute_result", data=kept, metadata={}, execution_count=None)
    return nbformat.v4.new_output("display_data", data=kept, metadata={})
