"""A catalogue of cheating submissions: every integrity vector of the grading pipeline.

Each :class:`Cheat` turns a release notebook (what a student gets) into a submission
that tries one way of raising its score without answering. Applied to the *unanswered*
notebook, an honest grader gives each of them what the unanswered notebook gets (0);
``tests/test_grading_integrity.py`` checks that the pipeline does, and that each one
shows up in the integrity report under its vector. ``benchmarks/autograde_speed.py``
mixes them into its batch. The code is written against chapter 1 (``fit`` and the
numpy checks) but most of it works on any assignment.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import nbformat


@dataclass(frozen=True)
class Cheat:
    name: str
    vectors: tuple[str, ...]  # at least one of these must be reported
    apply: Callable[[nbformat.NotebookNode], nbformat.NotebookNode]
    fast: bool = True  # False: needs the time limits of the test course to end


def _meta(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def _test_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code" and _meta(c).get("grade") and not _meta(c).get("solution")]


def _solution_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code" and _meta(c).get("solution")]


def _append_to_first_solution(code: str):
    def apply(nb):
        nb = copy.deepcopy(nb)
        cell = _solution_cells(nb)[0]
        cell.source = cell.source + "\n\n" + code.strip() + "\n"
        return nb
    return apply


def _new_cell_before_tests(code: str):
    def apply(nb):
        nb = copy.deepcopy(nb)
        first_test = nb.cells.index(_test_cells(nb)[0])
        nb.cells.insert(first_test, nbformat.v4.new_code_cell(code.strip()))
        return nb
    return apply


def _edit_tests(edit):
    def apply(nb):
        nb = copy.deepcopy(nb)
        for cell in _test_cells(nb):
            edit(nb, cell)
        return nb
    return apply


def _empty_test(nb, cell):
    cell.source = "pass"


def _comment_test(nb, cell):
    cell.source = "\n".join("# " + line for line in cell.source.splitlines())


def _markdown_test(nb, cell):
    index = nb.cells.index(cell)
    nb.cells[index] = nbformat.v4.new_markdown_cell(cell.source, metadata=cell.metadata)


def _rename_grade_id(nb, cell):
    cell.metadata["nbgrader"]["grade_id"] = cell.metadata["nbgrader"]["grade_id"] + "_mine"
    cell.source = "pass"


def _delete_tests(nb):
    nb = copy.deepcopy(nb)
    nb.cells = [c for c in nb.cells if c not in _test_cells(nb)]
    return nb


def _duplicate_tests(nb):
    nb = copy.deepcopy(nb)
    for cell in _test_cells(nb):
        twin = copy.deepcopy(cell)
        twin.pop("id", None)
        twin.source = "pass"
        nb.cells.insert(nb.cells.index(cell) + 1, nbformat.v4.new_code_cell(twin.source, metadata=twin.metadata))
    return nb


MONKEYPATCH = """
import numpy as np, numpy.testing, torch, dlvision.testing
np.allclose = lambda *a, **k: True
np.array_equal = lambda *a, **k: True
np.isclose = lambda *a, **k: np.ones(1, dtype=bool)
numpy.testing.assert_allclose = lambda *a, **k: None
torch.allclose = lambda *a, **k: True
for _name in dir(dlvision.testing):
    if _name.startswith("check"):
        setattr(dlvision.testing, _name, lambda *a, **k: None)
"""

BUILTINS = """
import builtins
builtins.isinstance = lambda *a, **k: True
builtins.abs = lambda x: 0
builtins.AssertionError = type("Nothing", (Exception,), {})
"""

IPYTHON_HOOKS = """
import ast
ip = get_ipython()
# every later cell that checks anything runs as an empty cell
ip.input_transformers_post.append(lambda lines: [] if any("check" in l or "assert" in l for l in lines) else lines)
class _Forgiving(ast.NodeTransformer):
    # every statement of every later cell is wrapped in try/except: nothing can fail
    def visit_Module(self, node):
        body = [ast.Try(body=[stmt], handlers=[ast.ExceptHandler(type=ast.Name("BaseException", ast.Load()),
                                                                  name=None, body=[ast.Pass()])],
                        orelse=[], finalbody=[]) for stmt in node.body]
        return ast.fix_missing_locations(ast.Module(body=body, type_ignores=[]))
ip.ast_transformers.append(_Forgiving())
ip.set_custom_exc((BaseException,), lambda shell, etype, value, tb, tb_offset=None: None)
"""

RIGGED_EQ = """
import numpy as np
class Anything(np.ndarray):
    def __new__(cls):
        return np.zeros(2).view(cls)
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False
    def __bool__(self):
        return True
    def __float__(self):
        return 0.0
    def __int__(self):
        return 0
class Always(int):
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False
    __hash__ = int.__hash__
def fit(X, y, *, bias=True, max_epochs=100, w0=None, b0=0.0):
    return Anything(), Always(0), Always(0)
def margin(X, y, w, b=0.0):
    return Always(0)
def bound(X, y, w, b=0.0, *, bias):
    return Always(0)
def is_linearly_separable(X, y, *, min_margin, bias=True):
    return Always(0), Anything(), Always(0)
"""

GRADEBOOK = """
import glob, sqlite3
# nbgrader runs the notebook in autograded/<student>/<assignment>/: the gradebook is three levels up
for path in glob.glob("../../../gradebook.db") + glob.glob("/srv/*/gradebook.db"):
    try:
        db = sqlite3.connect(path)
        db.execute("UPDATE grade SET manual_score = "
                   "(SELECT max_score FROM grade_cells WHERE grade_cells.id = grade.cell_id)")
        db.commit()
    except Exception as error:
        print("gradebook:", error)
"""

# each solution cell runs the reference cell of the same grade id, read from the source notebooks
SOLUTIONS = """
import glob as _glob, json as _json
for _path in _glob.glob("../../../solutions/*/*.ipynb") + _glob.glob("../../../source/*/*.ipynb"):
    for _cell in _json.load(open(_path))["cells"]:
        if _cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == GRADE_ID:
            exec("".join(_cell["source"]))
"""


def _solutions_from_source(nb):
    nb = copy.deepcopy(nb)
    for cell in _solution_cells(nb):
        cell.source = SOLUTIONS.strip().replace("GRADE_ID", repr(_meta(cell)["grade_id"]))
    return nb


EXIT_HARD = """
import os
os._exit(0)
"""

EXIT_SOFT = """
import sys
sys.exit(0)
"""

INFINITE_LOOP = """
while True:
    pass
"""

HUGE_MEMORY = """
blocks = []
while True:
    blocks.append(bytearray(256 * 2**20))
"""

FORK_BOMB = """
import os
for _ in range(100000):
    try:
        os.fork()
    except OSError:
        break
"""

HUGE_OUTPUT = """
from IPython.display import display
print("x" * (60 * 2**20))
display({"image/png": "A" * (30 * 2**20), "text/html": "<b>" * (30 * 2**20)}, raw=True)
"""

DETECT_GRADER = """
import os
if "NBGRADER_EXECUTION" in os.environ or "autograded" in os.getcwd():
    # only under the grader: every later cell that checks anything runs as an empty cell
    get_ipython().input_transformers_post.append(
        lambda lines: [] if any("check" in l or "assert" in l for l in lines) else lines)
"""

CHEATS = [
    Cheat("test-cells-emptied", ("test-cell-edited",), _edit_tests(_empty_test)),
    Cheat("test-cells-commented-out", ("test-cell-edited",), _edit_tests(_comment_test)),
    Cheat("test-cells-deleted", ("test-cell-deleted",), _delete_tests),
    Cheat("test-cells-to-markdown", ("test-cell-markdown",), _edit_tests(_markdown_test)),
    Cheat("test-cells-duplicated", ("test-cell-duplicated",), _duplicate_tests),
    Cheat("grade-ids-renamed", ("grade-id-renamed",), _edit_tests(_rename_grade_id)),
    Cheat("numpy-torch-course-checks-patched", ("monkeypatch",), _append_to_first_solution(MONKEYPATCH)),
    Cheat("builtins-patched", ("monkeypatch",), _new_cell_before_tests(BUILTINS)),
    Cheat("ipython-transformers-and-handlers", ("ipython-hooks",), _new_cell_before_tests(IPYTHON_HOOKS)),
    Cheat("rigged-eq-results", ("rigged-object",), _new_cell_before_tests(RIGGED_EQ)),
    Cheat("gradebook-written", ("grader-files",), _append_to_first_solution(GRADEBOOK)),
    Cheat("solutions-read", ("grader-files",), _solutions_from_source),
    Cheat("os-exit", ("process-exit", "kernel-died"), _append_to_first_solution(EXIT_HARD)),
    Cheat("sys-exit", ("process-exit",), _append_to_first_solution(EXIT_SOFT)),
    Cheat("infinite-loop", ("resource-abuse",), _append_to_first_solution(INFINITE_LOOP), fast=False),
    Cheat("huge-memory", ("resource-abuse",), _append_to_first_solution(HUGE_MEMORY)),
    Cheat("fork-bomb", ("resource-abuse",), _append_to_first_solution(FORK_BOMB)),
    Cheat("huge-output", ("huge-output",), _append_to_first_solution(HUGE_OUTPUT)),
    Cheat("grader-detection", ("grader-detection",), _append_to_first_solution(DETECT_GRADER)),
]
