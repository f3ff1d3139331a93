"""A catalogue of cheating submissions: every class of attack on the grading pipeline.

Each :class:`Cheat` turns a release notebook (what a student gets) into a submission that
tries one way of raising its score, harming other students or stopping the batch, without
answering. ``tests/test_grading_integrity.py`` grades each one with the real pipeline, each
followed on the same worker by an honest student, and requires: a score no higher than the
unanswered notebook's, full marks for the honest student after it, a complete batch, and a
finding in the integrity report under one of the cheat's ``vectors`` (all of ``require``).
``benchmarks/autograde_speed.py`` mixes them into its batch.

Most cheats are written against chapter 1 (``fit`` and the numpy checks) and work on any
assignment; ``assignment`` names the one a cheat needs: chapter 3 for the dodges of the
forbidden-operation rule (``conv2d_naive`` may not use ``conv2d``), the fixture
``networks`` (``tests/fixtures``) for the cheats that forge what the ``dlvision.testing``
tools report about a module. A cheat whose ``plant`` is set is a file-system attack: it
writes the submission's folder itself (a symbolic link, say) instead of a notebook.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nbformat


@dataclass(frozen=True)
class Cheat:
    name: str
    vectors: tuple[str, ...]  # at least one of these must be reported
    apply: Callable[[nbformat.NotebookNode], nbformat.NotebookNode | bytes]
    fast: bool = True  # False: needs the time limits of the test course to end
    assignment: str = ""  # "" for any assignment
    plant: Callable[[Path, Path, bytes], None] | None = None  # (folder, course, notebook bytes): writes the folder
    require: tuple[str, ...] = ()  # every one of these must be reported too
    graded: bool = True  # False: the submission must be quarantined, never graded


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


def _answer(grade_id: str, code: str):
    """The solution cell ``grade_id`` replaced by ``code``."""
    def apply(nb):
        nb = copy.deepcopy(nb)
        (cell,) = [c for c in _solution_cells(nb) if _meta(c).get("grade_id") == grade_id]
        cell.source = code.strip() + "\n"
        return nb
    return apply


def _new_cell_before_tests(code: str):
    def apply(nb):
        nb = copy.deepcopy(nb)
        first_test = nb.cells.index(_test_cells(nb)[0])
        nb.cells.insert(first_test, nbformat.v4.new_code_cell(code.strip()))
        return nb
    return apply


def _then(*steps):
    def apply(nb):
        for step in steps:
            nb = step(nb)
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


def _output_in_every_cell(nb):
    """Forty extra cells, each under the limit for one cell, together far over any notebook's."""
    nb = copy.deepcopy(nb)
    first_test = nb.cells.index(_test_cells(nb)[0])
    for _ in range(40):
        nb.cells.insert(first_test, nbformat.v4.new_code_cell('print("y" * 1_000_000)'))
    return nb


RICH_OUTPUT = """
from IPython.display import HTML, Javascript, Markdown, display
display(HTML('<script>document.title = "graded"</script><b onmouseover="alert(1)">full marks</b>'))
display(Markdown('<img src=x onerror="alert(1)">'), Javascript("alert(1)"))
"""

DETECT_GRADER = """
import os
if "NBGRADER_EXECUTION" in os.environ or "autograded" in os.getcwd():
    # only under the grader: every later cell that checks anything runs as an empty cell
    get_ipython().input_transformers_post.append(
        lambda lines: [] if any("check" in l or "assert" in l for l in lines) else lines)
"""

# the fork server is PID 1 of the sandbox: rewrite its memory, steal its sockets, stop it
FORK_SERVER = """
import ctypes, os, signal
tried = []
for target in ("/proc/1/mem", f"/proc/{os.getppid()}/mem", "/proc/1/fd/3"):
    try:
        with open(target, "r+b", buffering=0) as memory:
            memory.seek(0x400000)
            memory.write(b"\\xcc" * 64)
        tried.append(f"wrote {target}")
    except OSError as error:
        tried.append(f"{target}: {error.strerror}")
libc = ctypes.CDLL(None, use_errno=True)
pidfd = libc.syscall(434, 1, 0)  # pidfd_open(1)
tried.append(("pidfd_getfd", libc.syscall(438, pidfd, 3, 0), ctypes.get_errno()))
tried.append(("ptrace attach", libc.ptrace(16, 1, 0, 0), ctypes.get_errno()))
tried.append(("process_vm_writev", libc.syscall(311, 1, 0, 0, 0, 0, 0), ctypes.get_errno()))
for sig in (signal.SIGSTOP, signal.SIGTERM, signal.SIGKILL):
    try:
        os.kill(1, sig)
        tried.append(f"signal {sig.name} sent")
    except OSError as error:
        tried.append(f"signal {sig.name}: {error.strerror}")
print(tried)
"""

# files and processes left for the next student: a read-only folder with a module in it, a
# sitecustomize, files in /dev/shm and System V shared memory, a daemon that survives its parent
LEFTOVERS = """
import ctypes, os, sys, time
for folder in ("/scratch/keep", "/tmp/keep"):
    os.makedirs(folder, exist_ok=True)
    with open(f"{folder}/numpy.py", "w") as module:
        module.write("raise SystemExit('planted')\\n")
    os.chmod(folder, 0o555)
for path in ("/tmp/sitecustomize.py", "/scratch/sitecustomize.py", "/dev/shm/planted", "/dev/planted"):
    try:
        with open(path, "w") as planted:
            planted.write("import os; os._exit(0)\\n")
    except OSError as error:
        print(path, error.strerror)
libc = ctypes.CDLL(None, use_errno=True)
print("shmget", libc.shmget(0x4242, 1 << 20, 0o1666), ctypes.get_errno())
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        signal = __import__("signal")
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        while True:  # wait for the next student, and write into their files
            for root in ("/scratch", "/tmp"):
                try:
                    with open(f"{root}/planted.py", "w") as f:
                        f.write("import os; os._exit(0)\\n")
                except OSError:
                    pass
            time.sleep(0.05)
    os._exit(0)
time.sleep(0.5)
"""

WRITE_BACK = """
import numpy as np
def fit(X, y, *, bias=True, max_epochs=100, w0=None, b0=0.0):
    # a test that computed its expected value after the call would see these arrays
    X = X if isinstance(X, np.ndarray) else np.asarray(X)
    X[...] = 0
    y[...] = 1
    if w0 is not None:
        w0[...] = 0
    return np.zeros(X.shape[1]), 0.0, 0
"""

# a reply the student's process writes itself: a pickle that would rebuild a tensor in the grader
PICKLE_REPLY = """
import os, pickle, struct
def _reply(payload):
    fd = next(f for f in range(3, 64) if os.path.exists(f"/proc/self/fd/{f}")
              and os.readlink(f"/proc/self/fd/{f}").startswith("socket:"))
    os.write(fd, struct.pack("!Q", len(payload)) + payload)
def fit(X, y, *, bias=True, max_epochs=100, w0=None, b0=0.0):
    _reply(pickle.dumps({"status": "ok", "result": (X[0], 0.0, 0)}))
    _reply(b'{"status": "ok", "result": [' * 100000)
"""

OVERSIZED_REPLY = """
import os, struct
fd = next(f for f in range(3, 64) if os.path.exists(f"/proc/self/fd/{f}")
          and os.readlink(f"/proc/self/fd/{f}").startswith("socket:"))
os.write(fd, struct.pack("!Q", 1 << 40))
"""

# the static scan's findings must survive a reply that ends the process
ERASE_FINDINGS = MONKEYPATCH + OVERSIZED_REPLY

LONE_SURROGATE = "\\udc80"


def _lone_surrogates(nb) -> bytes:
    """Lone surrogates (which no UTF-8 file can hold, and which JSON escapes can still carry) in a
    solution cell, a markdown cell, cell and notebook metadata, and an output."""
    nb = copy.deepcopy(nb)
    marker = "SURROGATE-MARKER"
    solution = _solution_cells(nb)[0]
    solution.source += f"\n# {marker}\nprint('{marker}')\n"
    solution.metadata[marker] = marker
    solution.outputs = [nbformat.v4.new_output("stream", name="stdout", text=marker)]
    nb.cells.insert(0, nbformat.v4.new_markdown_cell(f"# {marker}"))
    nb.metadata[marker] = [marker]
    return nbformat.writes(nb).replace(marker, LONE_SURROGATE + "x").encode()


def _deep_json(nb) -> bytes:
    """A notebook whose metadata is nested deeper than any JSON parser's recursion."""
    text = nbformat.writes(nb)
    return text.replace('"metadata": {', '"metadata": {"deep": ' + "[" * 200_000 + "]" * 200_000 + ",", 1).encode()


def _link_to_source(folder: Path, course: Path, data: bytes) -> None:
    """The submitted notebook is a symbolic link to the instructor's source notebook."""
    (source,) = sorted((course / "solutions").glob("*/*.ipynb"))[:1]
    os.symlink(source, folder / source.name)


def _linked_folder(folder: Path, course: Path, data: bytes) -> None:
    """The submission folder is a symbolic link to the source folder."""
    source = sorted((course / "solutions").glob("*/*.ipynb"))[0].parent
    folder.rmdir()
    os.symlink(source, folder)


# --------------------------------------------------------------------------- the forbidden-operation rule (ch03)

CH03 = "ch03_convolution"
_CONV_ARGS = "x, w, b=None, stride=1, padding=0"

VIA_MODULE_ATTRIBUTE = f"""
import numpy as np
import torch.nn.functional as F
np.mm = F.conv2d  # stored in a module attribute: the exercise only mentions np.mm
def conv2d_naive({_CONV_ARGS}):
    return np.mm(x, w, b, stride=stride, padding=padding)
"""

VIA_CONTAINER = f"""
import torch
OPS = {{}}
OPS["same"] = torch.nn.functional.conv2d
def conv2d_naive({_CONV_ARGS}):
    return OPS["same"](x, w, b, stride=stride, padding=padding)
"""

VIA_HELPER_FILE = f"""
with open("helper_ops.py", "w") as _f:
    _f.write("import torch.nn.functional as _F\\ndef op(*a, **k):\\n    return getattr(_F, 'con' + 'v2d')(*a, **k)\\n")
import helper_ops
def conv2d_naive({_CONV_ARGS}):
    return helper_ops.op(x, w, b, stride=stride, padding=padding)
"""

LATER_CELL = f"""
import torch.nn.functional as F
def conv2d_naive({_CONV_ARGS}):
    return F.conv2d(x, w, b, stride=stride, padding=padding)
"""


def _defined_in_a_later_cell(nb):
    """The exercise's cell is left unanswered; a cell the student adds after it defines the function."""
    nb = copy.deepcopy(nb)
    (cell,) = [c for c in _solution_cells(nb) if _meta(c).get("grade_id") == "conv2d_naive"]
    nb.cells.insert(nb.cells.index(cell) + 1, nbformat.v4.new_code_cell(LATER_CELL.strip()))
    return nb


VIA_ATEN = f"""
import torch
def conv2d_naive({_CONV_ARGS}):
    s = (stride, stride) if isinstance(stride, int) else tuple(stride)
    p = (padding, padding) if isinstance(padding, int) else tuple(padding)
    return torch.ops.aten.convolution(x, w, b, s, p, (1, 1), False, (0, 0), 1)
"""

VIA_GETATTR_CHAIN = f"""
import torch
def conv2d_naive({_CONV_ARGS}):
    module = getattr(getattr(torch, "n" + "n"), "funct" + "ional")
    return getattr(module, "conv" + "2d")(x, w, b, stride=stride, padding=padding)
"""

VIA_MODULE_LAYER = f"""
import torch
def conv2d_naive({_CONV_ARGS}):
    layer = torch.nn.LazyConv2d(w.shape[0], w.shape[2:], stride=stride, padding=padding, bias=b is not None)
    layer(x)
    with torch.no_grad():
        layer.weight.copy_(w)
        if b is not None:
            layer.bias.copy_(b)
    return layer(x).detach()
"""

# --------------------------------------------------------------------------- forged facts (tests/fixtures/networks)

NETWORKS = "networks"

FORGED_TOOLS = """
import torch, dlvision.testing
import torch.nn as nn
class ResBlock(nn.Module):
    def __init__(self, c_in, c_out, stride=1):
        super().__init__()
        self.body = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)
    def forward(self, x):
        return self.body(x)
def _facts(module):  # every tool reports what a right answer would
    return {"type": "ResBlock", "training": False, "parameters": {}, "requires_grad": {}, "grads": {},
            "buffers": {}, "modules": {}}
dlvision.testing._module_facts = _facts
dlvision.testing.module_facts = _facts
dlvision.testing._forward_backward = lambda module, inputs, grad: {"output": inputs[0], "input_grads": [None],
                                                                   "parameter_grads": {}}
torch.nn.Module.named_parameters = lambda self, prefix="", recurse=True, remove_duplicate=True: iter([])
torch.func.functional_call = lambda module, state, args, *a, **k: args[0]
"""

FAKE_MODULE = """
import torch
class ResBlock:
    # not a module: an object that answers every question a test might ask
    training = False
    def __init__(self, c_in, c_out, stride=1):
        self.shape = (c_in, c_out, stride)
    def named_parameters(self, *a, **k):
        return iter([])
    def parameters(self):
        return iter([])
    def eval(self):
        return self
    def __call__(self, x):
        return torch.zeros(x.shape[0], self.shape[1], (x.shape[2] - 1) // self.shape[2] + 1,
                           (x.shape[3] - 1) // self.shape[2] + 1)
    def __eq__(self, other):
        return True
"""

OVERRIDDEN_PARAMETERS = """
import torch
import torch.nn as nn
class ResBlock(nn.Module):
    # reports the parameters of a right answer, computes nothing of the kind
    def __init__(self, c_in, c_out, stride=1):
        super().__init__()
        self.fake = nn.ParameterDict({"conv1.weight": nn.Parameter(torch.zeros(c_out, c_in, 3, 3))})
    def named_parameters(self, *a, **k):
        return iter([("conv1.weight", self.fake["conv1.weight"])])
    def forward(self, x):
        return torch.zeros(x.shape[0], self.fake["conv1.weight"].shape[0], 1, 1)
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
    Cheat("output-in-every-cell", ("huge-output",), _output_in_every_cell),
    Cheat("rich-output", ("rich-output",), _append_to_first_solution(RICH_OUTPUT)),
    Cheat("grader-detection", ("grader-detection",), _append_to_first_solution(DETECT_GRADER)),
    Cheat("fork-server-attacked", ("grader-files", "monkeypatch"), _append_to_first_solution(FORK_SERVER)),
    Cheat("leftovers-for-the-next-student", ("resource-abuse",), _append_to_first_solution(LEFTOVERS)),
    Cheat("arguments-changed-for-later-checks", ("inputs-changed",), _new_cell_before_tests(WRITE_BACK)),
    Cheat("pickle-reply", ("malformed-reply",), _new_cell_before_tests(PICKLE_REPLY)),
    Cheat("static-findings-erased-by-a-bad-reply", ("malformed-reply",), _new_cell_before_tests(ERASE_FINDINGS),
          require=("monkeypatch", "malformed-reply")),
    Cheat("lone-surrogates", ("invalid-notebook",), _lone_surrogates),
    Cheat("json-nested-too-deep", ("quarantined",), _deep_json, graded=False),
    Cheat("symlink-to-the-source-notebook", ("quarantined",), lambda nb: nb, plant=_link_to_source, graded=False),
    Cheat("symlinked-submission-folder", ("quarantined",), lambda nb: nb, plant=_linked_folder, graded=False),
    Cheat("forbidden-op-via-module-attribute", ("forbidden-op",), _answer("conv2d_naive", VIA_MODULE_ATTRIBUTE),
          assignment=CH03),
    Cheat("forbidden-op-via-container", ("forbidden-op",), _answer("conv2d_naive", VIA_CONTAINER), assignment=CH03),
    Cheat("forbidden-op-via-helper-file", ("forbidden-op",), _answer("conv2d_naive", VIA_HELPER_FILE),
          assignment=CH03),
    Cheat("forbidden-op-in-a-later-cell", ("forbidden-op",), _defined_in_a_later_cell, assignment=CH03),
    Cheat("forbidden-op-via-aten", ("forbidden-op",), _answer("conv2d_naive", VIA_ATEN), assignment=CH03),
    Cheat("forbidden-op-via-getattr-chain", ("forbidden-op",), _answer("conv2d_naive", VIA_GETATTR_CHAIN),
          assignment=CH03),
    Cheat("forbidden-op-via-a-layer", ("forbidden-op",), _answer("conv2d_naive", VIA_MODULE_LAYER), assignment=CH03),
    Cheat("tools-forged", ("monkeypatch",), _answer("resblock", FORGED_TOOLS), assignment=NETWORKS),
    Cheat("module-faked", ("rigged-object",), _answer("resblock", FAKE_MODULE), assignment=NETWORKS),
    Cheat("parameters-overridden", ("monkeypatch", "rigged-object"), _answer("resblock", OVERRIDDEN_PARAMETERS),
          assignment=NETWORKS),
]


def for_assignment(assignment: str) -> list[Cheat]:
    """The cheats that apply to ``assignment``: the general ones and its own."""
    return [c for c in CHEATS if c.assignment in ("", assignment)]
