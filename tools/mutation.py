"""Mutation testing of an assignment's reference solutions, judged by the notebook's own tests.

    python tools/mutation.py ch01_perceptron           # run; writes solutions/ch01_perceptron/mutation.md
    python tools/mutation.py ch01_perceptron --list    # the mutants only, nothing runs
    python tools/mutation.py ch01_perceptron --check   # is the committed report current? (no run)
    python tools/mutation.py ch01_perceptron --template   # triage entries for the untriaged survivors
    python tools/mutation.py ch01_perceptron --catalogue  # mutants.toml, judged the same way (quick)
    python tools/mutation.py ch01_perceptron --reference  # the reference once, with each test cell's time

**The mutants** come from mutmut (its own mutation operators, ``mutmut.mutation``): every
mutation mutmut makes inside a top-level function of a solution cell, on a line of the
reference region (between ``### BEGIN SOLUTION`` and ``### END SOLUTION``; the signature
and docstring that students are given are not mutated). One mutant changes one node.

**The judge** is the notebook itself, run in a plain Python process (no nbgrader, no
kernel): a warm process runs the cells before the mutated cell once, with the reference
code, then forks one child per mutant, which runs the rest of the notebook in order with
the mutant in its cell, visible and hidden tests included. A test cell fails when it raises. A mutant is
*killed* when a test cell fails, when it runs past the time limit (an endless loop), or
when its process dies; otherwise it *survives*. The reference itself must pass every
test cell first.

**Triage.** Every survivor must be recorded in ``solutions/<assignment>/mutation-triage.toml``,
keyed by its cell, its function, the original line(s) and the mutated line(s)::

    [[survivor]]
    cell = "fit"
    function = "fit"
    line = "mistakes += 1"
    mutant = "mistakes += 2"
    equivalent = "only mistakes == 0 is tested: any positive count means the same"

    [[survivor]]
    cell = "fit"
    function = "fit"
    line = "b = float(b0) if bias else 0.0"
    mutant = "b = float(b0) if bias else 1.0"
    killed_by = "test_fit"
    how = "fit with bias=False checks that b == 0.0 is returned"

An entry with ``killed_by`` records a survivor that a test added since kills: the tool
checks that it is killed now, by that cell. An entry with ``equivalent`` says why no test
can tell the mutant from the reference. The entries are the record of every survivor the
tool ever found, so "survivors before triage" is their number plus the untriaged ones.

**The report** ``solutions/<assignment>/mutation.md`` gives the tool and its version,
the counts, every triaged survivor with the test that kills it or why it is equivalent,
and the SHA-256 of the reference code, of the tests (every code cell that is not a
solution cell) and of the triage file. ``tests/test_mutation.py`` recomputes them and
fails when a report is stale, or lists an untriaged survivor or an inconsistent entry,
without running anything.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import hashlib
import json
import os
import re
import select
import signal
import sys
import tempfile
import textwrap
import time
import tomllib
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

REPORT_NAME = "mutation.md"
TRIAGE_NAME = "mutation-triage.toml"
_SUMMARY = re.compile(r"<!-- mutation-summary\n(.*?)\n-->", re.DOTALL)
_MARKER = re.compile(r"^[ \t]*### (BEGIN|END) SOLUTION[ \t]*$")


# --------------------------------------------------------------------------- notebooks


@dataclasses.dataclass
class Cell:
    """One code cell of a source notebook, as the mutation runner sees it."""

    kind: str  # "solution", "test" or "other" (setup, data, anything locked and not graded)
    grade_id: str | None
    code: str  # for a solution cell: the reference code, without the solution markers
    region: set[int]  # for a solution cell: the 1-based lines of `code` inside the solution region


def read_cells(path: Path) -> list[Cell]:
    import nbformat

    nb = nbformat.read(path, as_version=4)
    cells = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        grade_id = harness.nbgrader_meta(cell).get("grade_id")
        if harness.is_solution_cell(cell):
            lines, region, inside = [], set(), False
            for line in cell.source.splitlines():
                marker = _MARKER.match(line)
                if marker:
                    inside = marker.group(1) == "BEGIN"
                    continue
                lines.append(line)
                if inside:
                    region.add(len(lines))
            cells.append(Cell("solution", grade_id, "\n".join(lines) + "\n", region))
        elif harness.is_test_cell(cell):
            cells.append(Cell("test", grade_id, cell.source, set()))
        else:
            cells.append(Cell("other", grade_id, cell.source, set()))
    return cells


def _sha256(parts) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def fingerprints(folder: Path) -> dict[str, str]:
    """SHA-256 of the reference code, of the tests and of the triage file of an assignment."""
    reference, tests = [], []
    for path in sorted(folder.glob("*.ipynb")):
        for cell in read_cells(path):
            target = reference if cell.kind == "solution" else tests
            target += [path.name, cell.kind, str(cell.grade_id), cell.code]
    triage = folder / TRIAGE_NAME
    return {
        "reference_sha256": _sha256(reference),
        "tests_sha256": _sha256(tests),
        "triage_sha256": hashlib.sha256(triage.read_bytes()).hexdigest() if triage.exists() else "none",
    }


# --------------------------------------------------------------------------- mutants


@dataclasses.dataclass
class Mutant:
    notebook: str
    cell: str
    function: str
    lineno: int  # first changed line, 1-based in the cell's reference code
    line: str  # the original line(s), dedented
    mutant: str  # the mutated line(s), dedented
    occurrence: int  # 1 unless the same (cell, function, line, mutant) appears again
    code: str  # the whole mutated code of the cell

    @property
    def key(self) -> tuple:
        return (self.notebook, self.cell, self.function, self.line, self.mutant, self.occurrence)

    @property
    def id(self) -> str:
        digest = hashlib.sha256("\0".join(map(str, self.key)).encode()).hexdigest()[:8]
        return f"{self.cell}:{self.lineno}:{digest}"


def mutmut_version() -> str:
    from importlib.metadata import version

    return version("mutmut")


def _changed_lines(old: str, new: str) -> tuple[int, str, str]:
    a, b = old.splitlines(), new.splitlines()
    opcodes = [op for op in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes() if op[0] != "equal"]
    i1, i2 = opcodes[0][1], opcodes[-1][2]
    j1, j2 = opcodes[0][3], opcodes[-1][4]
    return i1 + 1, textwrap.dedent("\n".join(a[i1:i2])).strip(), textwrap.dedent("\n".join(b[j1:j2])).strip()


def cell_mutants(notebook: str, cell: Cell) -> list[Mutant]:
    """mutmut's mutants of one solution cell, restricted to its solution region."""
    import libcst as cst
    from mutmut.mutation.file_mutation import create_mutations

    # mutmut reads its configuration (pyproject.toml, setup.cfg) from the working directory:
    # read it in a folder of ours, so that its defaults apply whatever folder this runs from.
    here = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="mutation-cfg-") as empty:
        Path(empty, "setup.cfg").write_text("[mutmut]\nsource_paths=.\n")
        os.chdir(empty)
        try:
            module, mutations, _, _ = create_mutations(f"{cell.grade_id}.py", cell.code, covered_lines=cell.region)
        finally:
            os.chdir(here)
    out, seen, counts = [], set(), {}
    for m in mutations:
        function = m.contained_by_top_level_function
        if not isinstance(function, cst.FunctionDef):
            continue
        code = module.deep_replace(m.original_node, m.mutated_node).code
        if code == cell.code or code in seen:
            continue
        seen.add(code)
        lineno, line, mutant = _changed_lines(cell.code, code)
        base = (notebook, cell.grade_id, function.name.value, line, mutant)
        counts[base] = counts.get(base, 0) + 1
        out.append(Mutant(notebook, cell.grade_id, function.name.value, lineno, line, mutant, counts[base], code))
    return out


def mutants_of(folder: Path, only: set[str] | None = None) -> list[Mutant]:
    out = []
    for path in sorted(folder.glob("*.ipynb")):
        for cell in read_cells(path):
            if cell.kind == "solution" and (not only or cell.grade_id in only):
                out.extend(cell_mutants(path.name, cell))
    return out


# --------------------------------------------------------------------------- the plain-process runner


@dataclasses.dataclass
class Outcome:
    status: str  # "survived", "killed", "timeout", "died"
    failed: list[str]  # test cells that failed, in order (the first only, with fail_fast)
    message: str = ""  # the first failure's exception, in one line
    seconds: float = 0.0
    cells: dict | None = None  # test cell -> seconds (the reference run only)

    @property
    def killed(self) -> bool:
        return self.status != "survived"


def _one_line(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".replace("\n", " ")
    return text[:300]


def _compile(code: str, name: str):
    if re.search(r"^\s*[%!]", code, re.MULTILINE):  # IPython syntax: let IPython translate it
        from IPython.core.inputtransformer2 import TransformerManager

        code = TransformerManager().transform_cell(code)
    return compile(code, f"<cell {name}>", "exec")


def _run_cells(cells: list[Cell], namespace: dict, override: dict[str, str], fail_fast: bool) -> dict:
    failed, message, timings = [], "", {}
    for cell in cells:
        code = override.get(cell.grade_id, cell.code) if cell.kind == "solution" else cell.code
        start = time.perf_counter()
        try:
            exec(_compile(code, cell.grade_id or cell.kind), namespace)
        except BaseException as error:  # noqa: B036 (a student's SystemExit fails the cell too)
            if cell.kind == "test":
                failed.append(cell.grade_id)
                message = message or f"{cell.grade_id}: {_one_line(error)}"
                if fail_fast:
                    break
        if cell.kind == "test":
            timings[cell.grade_id] = time.perf_counter() - start
    return {"failed": failed, "message": message, "cells": timings}


class Runner:
    """A warm process for one notebook that forks one child per job.

    The warm process runs the notebook's cells with the reference code up to a chosen cell
    (:meth:`advance`); each child then runs the rest of the notebook, with a mutant in its
    cell. The cells before a mutant's cell cannot see the mutant (it is not defined yet), so
    they run once, not once per mutant.
    """

    def __init__(self, path: Path, workers: int = 1):
        self.path = path
        self.workers = max(1, workers)
        self.cells = read_cells(path)
        self.position = 0
        self.namespace = {"__name__": "__main__", "__builtins__": __builtins__}
        os.chdir(path.parent)
        self.advance(self.index_of_first_solution())

    def index_of_first_solution(self) -> int:
        return next(i for i, c in enumerate(self.cells) if c.kind == "solution")

    def index_of(self, grade_id: str) -> int:
        return next(i for i, c in enumerate(self.cells) if c.grade_id == grade_id and c.kind == "solution")

    def advance(self, index: int) -> None:
        """Run the reference notebook here up to (not including) cell ``index``."""
        if index < self.position:
            raise ValueError(f"{self.path.name}: cannot go back to cell {index} from {self.position}")
        with open(os.devnull, "w") as quiet:
            saved = sys.stdout
            sys.stdout = quiet
            try:
                result = _run_cells(self.cells[self.position:index], self.namespace, {}, fail_fast=False)
            finally:
                sys.stdout = saved
        if result["failed"]:
            raise RuntimeError(f"{self.path.name}: the reference fails a test cell: {result['message']}")
        self.position = index

    def _child(self, override: dict[str, str], fail_fast: bool, write_fd: int) -> None:
        try:
            os.setpgid(0, 0)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            result = _run_cells(self.cells[self.position:], self.namespace, override, fail_fast)
            payload = json.dumps(result).encode()
        except BaseException as error:  # noqa: B036
            payload = json.dumps({"failed": ["<runner>"], "message": _one_line(error), "cells": {}}).encode()
        with os.fdopen(write_fd, "wb") as pipe:
            pipe.write(payload)
        os._exit(0)

    def run(self, jobs: list[tuple[dict[str, str], bool]], timeout: float, progress=None) -> list[Outcome]:
        """Run each ``(override, fail_fast)`` job in its own forked child; outcomes in job order."""
        outcomes: list[Outcome | None] = [None] * len(jobs)
        pending = list(range(len(jobs)))
        running = {}  # pid -> (job index, read fd, start, chunks)
        while pending or running:
            while pending and len(running) < self.workers:
                index = pending.pop(0)
                read_fd, write_fd = os.pipe()
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    os.close(read_fd)
                    self._child(*jobs[index], write_fd)
                os.close(write_fd)
                running[pid] = (index, read_fd, time.monotonic(), [])
            fds = {entry[1]: pid for pid, entry in running.items()}
            ready, _, _ = select.select(list(fds), [], [], 0.05)
            for fd in ready:
                chunk = os.read(fd, 1 << 16)
                running[fds[fd]][3].append(chunk)
            for pid, (index, fd, start, chunks) in list(running.items()):
                elapsed = time.monotonic() - start
                done, status = os.waitpid(pid, os.WNOHANG)
                if not done and elapsed > timeout:
                    _kill_group(pid)
                    os.waitpid(pid, 0)
                    outcome = Outcome("timeout", [], f"no result after {timeout:.0f} s", elapsed)
                elif not done:
                    continue
                else:
                    while True:
                        chunk = os.read(fd, 1 << 16)
                        if not chunk:
                            break
                        chunks.append(chunk)
                    outcome = _outcome(b"".join(chunks), status, elapsed)
                _kill_group(pid)  # anything the child left behind
                os.close(fd)
                del running[pid]
                outcomes[index] = outcome
                if progress:
                    progress(index, outcome)
        return outcomes


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _outcome(payload: bytes, status: int, seconds: float) -> Outcome:
    try:
        result = json.loads(payload.decode())
    except (ValueError, UnicodeDecodeError):
        return Outcome("died", [], f"the process ended without a result (wait status {status})", seconds)
    failed = result["failed"]
    return Outcome("killed" if failed else "survived", failed, result["message"], seconds, result["cells"])


# --------------------------------------------------------------------------- triage


@dataclasses.dataclass
class Entry:
    notebook: str | None
    cell: str
    function: str
    line: str
    mutant: str
    occurrence: int
    killed_by: str | None
    how: str | None
    equivalent: str | None

    def matches(self, m: Mutant) -> bool:
        return (
            (self.notebook is None or self.notebook == m.notebook)
            and (self.cell, self.function, self.line, self.mutant, self.occurrence)
            == (m.cell, m.function, m.line, m.mutant, m.occurrence)
        )

    def describe(self) -> str:
        return f"{self.cell}/{self.function}: {self.line!r} -> {self.mutant!r}"


def load_triage(folder: Path) -> list[Entry]:
    path = folder / TRIAGE_NAME
    if not path.exists():
        return []
    with path.open("rb") as f:
        data = tomllib.load(f)
    unknown = set(data) - {"survivor"}
    if unknown:
        raise ValueError(f"{path}: unknown top-level keys {sorted(unknown)}; use [[survivor]] tables")
    entries = []
    allowed = {"notebook", "cell", "function", "line", "mutant", "occurrence", "killed_by", "how", "equivalent"}
    for i, raw in enumerate(data.get("survivor", [])):
        where = f"{path}, survivor #{i + 1}"
        if set(raw) - allowed:
            raise ValueError(f"{where}: unknown keys {sorted(set(raw) - allowed)}")
        for key in ("cell", "function", "line", "mutant"):
            if not isinstance(raw.get(key), str):
                raise ValueError(f"{where}: {key!r} must be a string")
        if ("killed_by" in raw) == ("equivalent" in raw):
            raise ValueError(f"{where}: give exactly one of 'killed_by' (with 'how') or 'equivalent'")
        text = raw.get("how") if "killed_by" in raw else raw.get("equivalent")
        if not isinstance(text, str) or len(text.split()) < 3:
            raise ValueError(f"{where}: say in a sentence {'how the test kills it' if 'killed_by' in raw else 'why it is equivalent'}")
        entries.append(
            Entry(raw.get("notebook"), raw["cell"], raw["function"], raw["line"].strip(), raw["mutant"].strip(),
                  int(raw.get("occurrence", 1)), raw.get("killed_by"), raw.get("how"), raw.get("equivalent"))
        )
    return entries


def _toml_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a valid TOML basic string


def template(m: Mutant, outcome: Outcome | None = None) -> str:
    lines = ["[[survivor]]"]
    lines += [
        f"cell = {_toml_string(m.cell)}",
        f"function = {_toml_string(m.function)}",
        f"line = {_toml_string(m.line)}",
        f"mutant = {_toml_string(m.mutant)}",
    ]
    if m.occurrence != 1:
        lines.append(f"occurrence = {m.occurrence}")
    lines += ['killed_by = "test_..."', 'how = "..."', '# or: equivalent = "..."']
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the report


def _md(text: str) -> str:
    text = text.replace("|", "\\|").replace("\n", " ⏎ ")
    return text


def _code(text: str) -> str:
    text = _md(text)
    fence = "``" if "`" in text else "`"
    return f"{fence}{text}{fence}" if text else "(nothing)"


def build_report(assignment: str, folder: Path, mutants: list[Mutant], outcomes: list[Outcome], entries: list[Entry],
                 reference: Outcome, seconds: float, workers: int = 1) -> tuple[str, dict]:
    survivors = [(m, o) for m, o in zip(mutants, outcomes, strict=True) if not o.killed]
    matched: dict[int, Entry] = {}
    problems = []
    for i, m in enumerate(mutants):
        hits = [e for e in entries if e.matches(m)]
        if len(hits) > 1:
            problems.append(f"the triage file lists {m.id} more than once")
        if hits:
            matched[i] = hits[0]
    used = {id(e) for e in matched.values()}
    for e in entries:
        if id(e) not in used:
            problems.append(f"triage entry matches no mutant of the current code: {e.describe()}")
    untriaged, equivalent, now_killed = [], [], []
    for i, (m, o) in enumerate(zip(mutants, outcomes, strict=True)):
        e = matched.get(i)
        if e is None:
            if not o.killed:
                untriaged.append((m, o))
            continue
        if e.equivalent is not None:
            if o.killed:
                problems.append(f"{m.id} is triaged as equivalent but a test kills it ({o.failed or o.status}): "
                                "record it with killed_by instead")
            equivalent.append((m, e))
        else:
            if not o.killed:
                problems.append(f"{m.id} is triaged as killed by {e.killed_by} but survives")
            elif e.killed_by not in o.failed:
                problems.append(f"{m.id} is triaged as killed by {e.killed_by} but that cell passes "
                                f"(it is killed by {', '.join(o.failed) or o.status})")
            now_killed.append((m, e, o))
    for m, _ in untriaged:
        problems.append(f"untriaged survivor {m.id}: {m.line!r} -> {m.mutant!r}")
    killed = sum(o.killed for o in outcomes)
    timeouts = sum(o.status in ("timeout", "died") for o in outcomes)
    summary = {
        "assignment": assignment,
        "tool": f"mutmut {mutmut_version()}",
        **fingerprints(folder),
        "mutants": len(mutants),
        "killed": killed,
        "killed_by_time_limit_or_death": timeouts,
        # every triaged mutant survived a run once (that is why it is in the file), plus today's untriaged
        "survivors_before_triage": len(matched) + len(untriaged),
        "survivors": len(survivors),
        "equivalent": len(equivalent),
        "untriaged": len(untriaged),
        "problems": problems,
    }
    load = os.getloadavg()[0]
    per_cell = {}
    for m, o in zip(mutants, outcomes, strict=True):
        row = per_cell.setdefault(m.cell, [0, 0, 0])
        row[0] += 1
        row[1] += o.killed
        row[2] += not o.killed
    lines = [
        f"# Mutation testing: {assignment}",
        "",
        f"Written by `python tools/mutation.py {assignment}`: do not edit (the triage is in "
        f"`{TRIAGE_NAME}`). The mutants are mutmut's ({summary['tool']}), made on the reference code of "
        "every solution cell (inside the solution region); each one is judged by the notebook's own "
        "test cells, visible and hidden, run in a plain Python process. A mutant is killed when a test "
        "cell raises, or when it runs past the time limit or its process dies.",
        "",
        "| | |",
        "|---|---|",
        f"| tool | {summary['tool']} |",
        f"| mutants | {len(mutants)} |",
        f"| killed | {killed} ({timeouts} by the time limit or a dead process) |",
        f"| survivors before triage | {summary['survivors_before_triage']} |",
        f"| survivors now | {len(survivors)}: {len(equivalent)} equivalent, {len(untriaged)} untriaged |",
        f"| survivors a test now kills | {len(now_killed)} |",
        f"| problems | {len(problems)} |",
        f"| run | {seconds:.0f} s wall, reference notebook {reference.seconds:.1f} s, {workers} worker(s); "
        f"load average {load:.1f} |",
        "",
        "## By solution cell",
        "",
        "| cell | mutants | killed | survive |",
        "|---|---|---|---|",
        *[f"| `{cell}` | {n} | {k} | {s} |" for cell, (n, k, s) in per_cell.items()],
        "",
    ]
    if problems:
        lines += ["## Problems (the CI test fails until these are fixed)", "", *[f"- {_md(p)}" for p in problems], ""]
    lines += [f"## Survivors that a test now kills ({len(now_killed)})", ""]
    if now_killed:
        lines += ["| mutant | line | mutated to | killed by | how |", "|---|---|---|---|---|"]
        lines += [f"| `{m.id}` | {_code(m.line)} | {_code(m.mutant)} | `{e.killed_by}` | {_md(e.how)} |"
                  for m, e, _ in now_killed]
    else:
        lines.append("None.")
    lines += ["", f"## Equivalent mutants ({len(equivalent)})", ""]
    if equivalent:
        lines += ["| mutant | line | mutated to | why no test can tell |", "|---|---|---|---|"]
        lines += [f"| `{m.id}` | {_code(m.line)} | {_code(m.mutant)} | {_md(e.equivalent)} |" for m, e in equivalent]
    else:
        lines.append("None.")
    if untriaged:
        lines += ["", f"## Untriaged survivors ({len(untriaged)})", "",
                  "| mutant | line | mutated to |", "|---|---|---|"]
        lines += [f"| `{m.id}` | {_code(m.line)} | {_code(m.mutant)} |" for m, _ in untriaged]
    lines += ["", "<!-- mutation-summary", json.dumps(summary, indent=1, ensure_ascii=False), "-->", ""]
    return "\n".join(lines), summary


def read_summary(folder: Path) -> dict | None:
    path = folder / REPORT_NAME
    if not path.exists():
        return None
    match = _SUMMARY.search(path.read_text())
    return json.loads(match.group(1)) if match else {}


def check_report(folder: Path) -> list[str]:
    """Why the committed report of an assignment is not acceptable (empty when it is)."""
    rerun = f"run `python tools/mutation.py {folder.name}`"
    summary = read_summary(folder)
    if summary is None:
        return [f"{folder.name}: no {REPORT_NAME}; {rerun}"]
    if not summary:
        return [f"{folder.name}/{REPORT_NAME} has no mutation-summary block; {rerun}"]
    problems = []
    now = fingerprints(folder)
    for key, what in [("reference_sha256", "the reference code"), ("tests_sha256", "the tests"),
                      ("triage_sha256", TRIAGE_NAME)]:
        if summary.get(key) != now[key]:
            problems.append(f"{folder.name}: {what} changed since {REPORT_NAME} was written; {rerun}")
    if summary.get("untriaged"):
        problems.append(f"{folder.name}: {summary['untriaged']} untriaged survivor(s) in {REPORT_NAME}: kill each "
                        f"with a test or record why it is equivalent in {TRIAGE_NAME}, then {rerun}")
    for p in summary.get("problems", []):
        problems.append(f"{folder.name}: {p}")
    if not summary.get("mutants"):
        problems.append(f"{folder.name}: the report counts no mutant")
    return problems


# --------------------------------------------------------------------------- command line


def run(folder: Path, *, workers: int, timeout: float | None, only: set[str] | None, quiet: bool) -> tuple[str, dict]:
    assignment = folder.name
    mutants = mutants_of(folder, only)
    if not mutants:
        raise SystemExit(f"{assignment}: mutmut makes no mutant of its solution cells")
    entries = load_triage(folder)
    started = time.monotonic()
    notebooks = sorted(folder.glob("*.ipynb"))
    outcomes: list[Outcome | None] = [None] * len(mutants)
    reference_seconds = 0.0
    home = os.getcwd()
    for path in notebooks:
        runner = Runner(path, workers)
        try:
            reference = runner.run([({}, False)], timeout=3600)[0]
            if reference.killed:
                raise SystemExit(f"{path.name}: the reference solution fails its own tests: "
                                 f"{reference.message or reference.status}")
            reference_seconds += reference.seconds
            limit = timeout if timeout else max(30.0, 5 * reference.seconds)
            indices = [i for i, m in enumerate(mutants) if m.notebook == path.name]
            if not quiet:
                print(f"{path.name}: reference passes every test cell in {reference.seconds:.1f} s; "
                      f"{len(indices)} mutants, time limit {limit:.0f} s each, {workers} worker(s)", flush=True)
            done, total = 0, len(indices)
            for cell in sorted({mutants[i].cell for i in indices}, key=runner.index_of):
                group = [i for i in indices if mutants[i].cell == cell]
                runner.advance(runner.index_of(cell))
                triaged_killed = {i for i in group if any(e.killed_by and e.matches(mutants[i]) for e in entries)}
                jobs = [({cell: mutants[i].code}, i not in triaged_killed) for i in group]

                def progress(j, outcome, group=group, offset=done, total=total):
                    m = mutants[group[j]]
                    outcomes[group[j]] = outcome
                    if not quiet:
                        what = outcome.status if outcome.status != "killed" else f"killed by {outcome.failed[0]}"
                        print(f"  [{offset + j + 1}/{total}] {m.id} {what}: {m.mutant[:70]!r}", flush=True)
                        if outcome.message:
                            print(f"      {outcome.message[:160]}", flush=True)

                runner.run(jobs, timeout=limit, progress=progress)
                done += len(group)
        finally:
            os.chdir(home)
    reference = Outcome("survived", [], "", reference_seconds)
    return build_report(assignment, folder, mutants, outcomes, entries, reference, time.monotonic() - started, workers)


def run_catalogue(folder: Path, *, workers: int, timeout: float | None) -> list[tuple[str, Outcome]]:
    """The mutants of ``mutants.toml``, judged by the same plain-process runner (a quick check
    before the real nbgrader harness of ``tests/test_graders.py``)."""
    mutants = harness.load_mutants(folder.name) if folder.parent == harness.SOLUTIONS else []
    results = []
    home = os.getcwd()
    for path in sorted(folder.glob("*.ipynb")):
        mine = [m for m in mutants if (m.notebook or path.name) == path.name]
        if not mine:
            continue
        runner = Runner(path, workers)
        try:
            reference = runner.run([({}, False)], timeout=3600)[0]
            if reference.killed:
                raise SystemExit(f"{path.name}: the reference solution fails its own tests: {reference.message}")
            codes = {c.grade_id: c.code for c in runner.cells if c.kind == "solution"}
            jobs = [({m.cell: m.apply(codes[m.cell])}, True) for m in mine]
            limit = timeout if timeout else max(30.0, 5 * reference.seconds)
            results += list(zip([m.name for m in mine], runner.run(jobs, timeout=limit), strict=True))
        finally:
            os.chdir(home)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("assignment", help="a folder of solutions/ (or a path to an assignment folder)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--check", action="store_true", help="check the committed report without running")
    parser.add_argument("--template", action="store_true",
                        help="after the run, print triage entries for the untriaged survivors")
    parser.add_argument("-j", "--workers", type=int, default=1, help="mutants run at once (default 1)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds per mutant (default: 5x the reference run, at least 30)")
    parser.add_argument("--only", action="append", metavar="CELL",
                        help="mutate only this solution cell (repeatable); writes no report")
    parser.add_argument("--reference", action="store_true",
                        help="run the reference notebook once in the plain runner, with each test cell's time")
    parser.add_argument("--catalogue", action="store_true",
                        help="judge the mutants of mutants.toml with the same runner (quick; writes nothing)")
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    folder = Path(args.assignment)
    if not (folder.is_dir() and any(folder.glob("*.ipynb"))):
        folder = harness.SOLUTIONS / args.assignment
    if not (folder.is_dir() and any(folder.glob("*.ipynb"))):
        parser.error(f"no assignment {args.assignment!r}; the assignments are {harness.assignments()}")
    folder = folder.resolve()
    if args.check:
        problems = check_report(folder)
        print("\n".join(problems) if problems else f"{folder.name}: {REPORT_NAME} is current, every survivor triaged")
        return 1 if problems else 0
    if args.list:
        for m in mutants_of(folder, set(args.only or [])):
            print(f"{m.id}\t{m.function}\t{m.line!r} -> {m.mutant!r}")
        return 0
    # One BLAS/OpenMP thread in the runner and its children (set before numpy or torch is imported).
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(name, "1")
    os.environ.setdefault("DLVISION_PROFILE", "quick")
    os.environ.setdefault("MPLBACKEND", "Agg")
    if args.reference:
        home = os.getcwd()
        failed = False
        for path in sorted(folder.glob("*.ipynb")):
            try:
                outcome = Runner(path).run([({}, False)], timeout=3600)[0]
            finally:
                os.chdir(home)
            print(f"{path.name}: {'passes' if not outcome.killed else 'FAILS'} in {outcome.seconds:.1f} s"
                  + (f": {outcome.message}" if outcome.killed else ""))
            for cell, seconds in (outcome.cells or {}).items():
                print(f"  {cell}: {seconds:.2f} s")
            failed |= outcome.killed
        return 1 if failed else 0
    if args.catalogue:
        results = run_catalogue(folder, workers=args.workers, timeout=args.timeout)
        for name, outcome in results:
            what = f"killed by {outcome.failed[0]}" if outcome.status == "killed" else outcome.status
            print(f"{'ok  ' if outcome.killed else 'FAIL'} {name}: {what}")
            if outcome.message and not args.quiet:
                print(f"      {outcome.message[:200]}")
        escaped = [name for name, outcome in results if not outcome.killed]
        print(f"{len(results)} catalogued mutants, {len(escaped)} escaped the tests" + (f": {escaped}" if escaped else ""))
        return 1 if escaped else 0
    try:
        report, summary = run(folder, workers=args.workers, timeout=args.timeout,
                              only=set(args.only) if args.only else None, quiet=args.quiet)
    except Exception:
        traceback.print_exc()
        return 2
    if args.only:
        print(report)
    else:
        (folder / REPORT_NAME).write_text(report)
        print(f"wrote {folder / REPORT_NAME}")
    print(f"{summary['mutants']} mutants, {summary['killed']} killed, {summary['survivors']} survive "
          f"({summary['equivalent']} equivalent, {summary['untriaged']} untriaged); "
          f"{len(summary['problems'])} problem(s)")
    for p in summary["problems"]:
        print("  " + p)
    if args.template and summary["untriaged"]:
        entries = load_triage(folder)
        print("\n# triage entries to complete, for", TRIAGE_NAME)
        for m in mutants_of(folder, set(args.only) if args.only else None):
            if any(m.id in p and p.startswith("untriaged") for p in summary["problems"]) and not any(
                e.matches(m) for e in entries
            ):
                print(template(m))
    return 1 if summary["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
