"""``grading.scan``: the static integrity scan and the per-exercise forbidden-op rules.

Table-driven: for each integrity vector, student code that must be reported under it
(direct, aliased and indirect forms) and honest look-alikes that must not be reported at
all. Then the course's own code: every reference solution and every mutant scans clean,
and chapter 3's ``integrity.toml`` catches the two mutants that call the library and
nothing else.
"""

from __future__ import annotations

import pytest

import harness
from grading.findings import VECTORS
from grading.scan import Rule, forbidden_uses, load_rules, scan_student_code

# --------------------------------------------------------------------------- the integrity scan

# vector -> student code that must be reported under it
FLAGGED: dict[str, list[str]] = {
    "monkeypatch": [
        "import numpy as np\nnp.allclose = lambda *a, **k: True",
        "import numpy\nnumpy.testing.assert_allclose = print",
        "from numpy import testing as t\nt.assert_allclose = print",
        "np.allclose = f",  # np as the setup cell binds it
        "import torch\ntorch.Tensor.__eq__ = lambda a, b: True",
        "import numpy as np\nsetattr(np, 'allclose', f)",
        "import numpy as np\nsetattr(np.ndarray, '__eq__', f)",
        "import builtins\nbuiltins.abs = lambda x: 0",
        "__builtins__.isinstance = lambda *a: True",
        "__builtins__['abs'] = f",
        "import sys\nsys.modules['numpy'] = fake",
        "import dlvision.testing\ndlvision.testing.check_array = lambda *a, **k: None",
        "check_array.__code__ = (lambda *a, **k: None).__code__",
        "import numpy as np\nvars(np)['allclose'] = f",
        "import numpy as np\nnp.__dict__['allclose'] = f",
        "import numpy as np\ndel np.allclose",
        "import numpy as np\nnp.pi += 1",
        "T = torch.Tensor\nT.__eq__ = f",  # an alias made by assignment
        "globals()['np'].allclose = f",
        "globals()['__builtins__']['abs'] = f",
        "globals()[name] = f",
        "type(torch.zeros(1)).__eq__ = f",
        "import sys\nsys.modules.update({'numpy': fake})",
        "import sys\nsys.meta_path.insert(0, finder)",
        "import importlib, numpy\nimportlib.reload(numpy)",
        "import sys\nsys.settrace(tracer)",
        "import gc\nreferrers = gc.get_referrers(check_array)",
        "import ctypes\nctypes.memmove(a, b, 8)",
        "import sys\nframe = sys._getframe(1)",
        "import inspect\ncaller = inspect.currentframe().f_back.f_globals",
        "def f():\n    g = f.__globals__",
        "x = eval('1 + 1')",
        "exec('np.allclose = f')",
        "code = compile('1', 'x', 'eval')",
        "m = __import__('numpy')",
        "import importlib\nm = importlib.import_module(name)",
        "name = 'all' + 'close'\ngetattr(np, name)",
        "setattr(dlvision.testing, name, f)",
        "for name in dir(np):\n    setattr(np, name, f)",
    ],
    "ipython-hooks": [
        "ip = get_ipython()\nip.input_transformers_cleanup.append(f)",
        "get_ipython().input_transformers_post.append(f)",
        "get_ipython().ast_transformers.append(NoAsserts())",
        "get_ipython().set_custom_exc((BaseException,), handler)",
        "get_ipython().events.register('pre_run_cell', f)",
        "get_ipython().register_magic_function(f)",
        "get_ipython().run_line_magic('load_ext', 'x')",
        "from IPython import get_ipython as g\ng().ast_transformers.clear()",
        "import sys\nsys.excepthook = lambda *a: None",
        "import sys\nsys.displayhook = print",
        "%load_ext autoreload",
        "%%capture captured\nprint('hidden')",
        "import atexit\natexit.register(f)",
    ],
    "rigged-object": [
        "class Always:\n    def __eq__(self, other):\n        return True",
        "class Never:\n    def __ne__(self, other):\n        return False",
        "class Truthy:\n    def __bool__(self):\n        return True",
        "class U:\n    def __array_ufunc__(self, *a, **k):\n        return True",
        "class U:\n    def __array_function__(self, *a, **k):\n        return True",
        "class T:\n    @classmethod\n    def __torch_function__(cls, *a, **k):\n        return True",
        "class M(type):\n    def __instancecheck__(cls, obj):\n        return True",
        "class M(type):\n    def __subclasscheck__(cls, sub):\n        return True",
        "class Fake:\n    @property\n    def __class__(self):\n        return float",
        "import numpy as np\nclass A(np.ndarray):\n    pass",
        "class A(torch.Tensor):\n    pass",
        "class A(float):\n    pass",
        "class A(int):\n    pass",
        "class A(tuple):\n    pass",
        "class A(dict):\n    pass",
        "class A(list):\n    pass",
        "class A(str):\n    pass",
        "Fake = type('Fake', (float,), {'__eq__': lambda s, o: True})",
        "x.__class__ = Fake",
    ],
    "grader-files": [
        "text = open('/etc/hosts').read()",
        "with open(path) as f:\n    data = f.read()",
        "from pathlib import Path\nPath('x').read_text()",
        "import os\nos.listdir('..')",
        "import os\nfor root, dirs, files in os.walk('/'):\n    pass",
        "import os\nos.remove('x')",
        "import os\nos.rename('a', 'b')",
        "import os\nos.scandir('.')",
        "import shutil\nshutil.copy('a', 'b')",
        "import glob\nglob.glob('*')",
        "import sqlite3\nsqlite3.connect('x')",
        "import sqlalchemy",
        "import subprocess\nsubprocess.run(['ls'])",
        "subprocess.check_output(['ls'])",  # subprocess as the setup cell imports it
        "import os\nos.system('ls')",
        "import os\nos.popen('ls')",
        "import os\nos.execv('/bin/sh', ['sh'])",
        "import os\nos.spawnl(os.P_WAIT, '/bin/ls')",
        "from os import system as run\nrun('ls')",
        "path = '../../gradebook.db'",
        "x = 'grades.db'",
        "p = '../solutions/ch03'",
        "p = 'source/ch01'",
        "p = f'{root}/autograded/{student}'",
        "p = 'submitted'",
        "import nbgrader",
        "!cat ../../gradebook.db",
        "files = !ls",
    ],
    "process-exit": [
        "import os\nos._exit(0)",
        "import sys\nsys.exit(0)",
        "exit()",
        "quit()",
        "import os\nos.kill(os.getpid(), 9)",
        "import signal\nsignal.signal(signal.SIGALRM, f)",
        "raise SystemExit",
        "raise SystemExit(1)",
        "raise KeyboardInterrupt()",
        "from sys import exit as leave\nleave()",
    ],
    "resource-abuse": [
        "import os\nos.fork()",
        "import multiprocessing\nmultiprocessing.Process(target=f).start()",
        "from multiprocessing import Pool",
        "import threading\nthreading.Thread(target=loop, daemon=True).start()",
        "while True:\n    pass",
        "while 1:\n    x = [0] * 10**9",
        "while True:\n    for i in range(3):\n        break",  # that break ends the for loop only
        "import resource\nresource.setrlimit(resource.RLIMIT_CPU, (1, 1))",
    ],
    "grader-detection": [
        "import os\nif 'NBGRADER_EXECUTION' in os.environ:\n    pass",
        "import os\nos.environ.get('HOME')",
        "import os\nos.getenv('USER')",
        "import os\nhere = os.getcwd()",
        "from os import getcwd\ngetcwd()",
        "import socket\nsocket.gethostname()",
        "import platform\nplatform.node()",
        "import getpass\ngetpass.getuser()",
        "import sys\nargs = sys.argv",
        "print(__file__)",
        "cmdline = '/proc/self/cmdline'",
        "flag = 'NBGRADER'",
    ],
    "network": [
        "import socket\ns = socket.socket()",
        "import urllib.request\nurllib.request.urlopen('http://example.com')",
        "from urllib.request import urlopen",
        "import requests\nrequests.get('http://example.com')",
        "import http.client\nhttp.client.HTTPConnection('example.com')",
        "%pip install cheat",
    ],
}

# Honest code that looks like the above: nothing to report.
HONEST = [
    "allclose = np.allclose(a, b)",
    "def allclose(a, b):\n    return abs(a - b) < 1e-9",
    "same = x.__eq__(y)",
    "params = {}\nparams['W1'] = np.zeros((3, 4))",
    "grads = {'W1': 0}\ngrads['W1'] += 1",
    "np.add.at(dx, (n, c, rows, cols), dout)",
    "while True:\n    n += 1\n    if n > 3:\n        break",
    "while n < 10:\n    n += 1",
    "def serve():\n    while True:\n        yield 1",  # not at the top level of the cell
    "x = torch.zeros(3)\nx[0] = 1.0",
    "self_test = getattr(x, 'shape')",
    "out = getattr(np, 'maximum')(x, 0)",
    "class Net(torch.nn.Module):\n    def forward(self, x):\n        return x",
    "class Point:\n    def __init__(self, x):\n        self.x = x\n    def __repr__(self):\n        return f'Point({self.x})'",
    "def f(signal):\n    return signal.sum()",  # a parameter, not the signal module
    "signal = x[0]\npeak = signal.max()",
    "def f(os):\n    return os.environ",
    "plt.rcParams['figure.figsize'] = (8, 4)",
    "torch.backends.cudnn.benchmark = True",
    "np.random.seed(0)\ntorch.manual_seed(0)",
    "from IPython.display import display\ndisplay(x)",
    "%matplotlib inline",
    "%timeit conv2d_naive(x, w)",
    "%%timeit\nconv2d_im2col(x, w)",
    "x?",
    'def f():\n    """Reads the submitted gradebook.db from solutions/: a docstring, not a path."""\n    return 1',
    "raise ValueError('w is the zero vector')",
    "import math\nr = math.inf",
    "from numpy.lib.stride_tricks import sliding_window_view",
    "import warnings\nwarnings.warn('slow', UserWarning)",
    "t = np.testing\nt.assert_allclose(a, b)",
    "velocity = {k: np.zeros_like(v) for k, v in params.items()}\nfor k in params:\n    velocity[k] = 0.9 * velocity[k]",
    "history = {'loss': []}\nhistory['loss'].append(1.0)",
]


def _cases():
    return [pytest.param(vector, code, id=f"{vector}:{code[:40]}") for vector, codes in FLAGGED.items() for code in codes]


def test_every_code_vector_has_cases():
    for vector in FLAGGED:
        assert vector in VECTORS
    assert {"monkeypatch", "ipython-hooks", "rigged-object", "grader-files", "process-exit", "resource-abuse",
            "grader-detection", "network"} <= set(FLAGGED)


@pytest.mark.parametrize("vector, code", _cases())
def test_flagged(vector, code):
    findings = scan_student_code([("cell 4", code)])
    assert vector in {f.vector for f in findings}, f"{vector!r} not reported for:\n{code}\ngot {findings}"
    for finding in findings:
        assert finding.cell == "cell 4" and finding.source == "static"
        assert finding.detail.startswith("line "), finding.detail


@pytest.mark.parametrize("code", HONEST, ids=[c[:40] for c in HONEST])
def test_honest_lookalike_not_flagged(code):
    assert scan_student_code([("cell 4", code)]) == []


def test_details_name_the_real_module_and_the_line():
    code = "import numpy as np\n\n\nnp.allclose = lambda *a, **k: True\n"
    [finding] = scan_student_code([("fit", code)])
    assert (finding.vector, finding.cell, finding.detail) == ("monkeypatch", "fit", "line 4: assigns numpy.allclose")


def test_line_numbers_count_leading_blank_lines_and_magics():
    code = "\n\n%time x = 1\nimport os\nos._exit(0)\n"
    [finding] = scan_student_code([("cell 2", code)])
    assert finding.detail.startswith("line 5: ")


def test_code_inside_timeit_is_scanned_at_its_line():
    code = "x = 1\n%timeit np.allclose(a, b)\n%time sys.exit(0)\n"
    [finding] = scan_student_code([("cell 2", code)])
    assert (finding.vector, finding.detail) == ("process-exit", "line 3: uses sys.exit")


def test_one_finding_per_construct():
    code = "import os\nos.environ['A']\nos.environ['A']\nos.getenv('B')\nos.getenv('C')\n"
    details = [f.detail for f in scan_student_code([("cell 1", code)])]
    assert details == ["line 2: uses os.environ['A']", "line 4: uses os.getenv"]


def test_aliases_reach_across_cells():
    cells = [("cell 1", "import numpy.testing as nt"), ("cell 2", "nt.assert_allclose = print")]
    [finding] = scan_student_code(cells)
    assert (finding.cell, finding.detail) == ("cell 2", "line 1: assigns numpy.testing.assert_allclose")


def test_a_cell_that_does_not_parse_is_skipped():
    cells = [("cell 1", "def f(:\n    np.allclose = g"), ("cell 2", "x = (\n"), ("cell 3", "import os\nos._exit(0)")]
    assert [f.cell for f in scan_student_code(cells)] == ["cell 3"]


def test_code_too_deep_to_read_is_reported_not_a_crash():
    code = "x = " + "-" * 900 + "1\nnp.allclose = f\n"  # the first statement is too deep, the second is read
    details = [f.detail for f in scan_student_code([("cell 1", code)])]
    assert len(details) == 2 and "too deep" in details[0] and details[1] == "line 2: assigns numpy.allclose"
    [inside_timeit] = scan_student_code([("cell 1", "%timeit " + "-" * 900 + "1")])
    assert "too deep" in inside_timeit.detail
    deep_helper = "def helper(x):\n    return " + "-" * 900 + "x\n"
    cells = [("conv2d_naive", "def conv2d_naive(x, w):\n    return helper(x)\n"), ("cell 5", deep_helper)]
    [use] = forbidden_uses([Rule(("conv2d_naive",), frozenset({"conv2d"}), (), "why")], cells)["conv2d_naive"]
    assert use.startswith("cell 5, line 1 (in helper): code nested more than")


# --------------------------------------------------------------------------- the course's own code


def _variants():
    """(assignment, variant, notebook, codes) for the reference and every mutant (and the harness's warning wrappers)."""
    cases = []
    for assignment in harness.assignments():
        for variant, notebooks in harness.variant_codes(assignment, harness.load_mutants(assignment)).items():
            for notebook, codes in notebooks.items():
                if codes:
                    cases.append(pytest.param(assignment, variant, codes, id=f"{assignment}:{variant}:{notebook}"))
    return cases


@pytest.mark.parametrize("assignment, variant, codes", _variants())
def test_reference_and_mutants_scan_clean(assignment, variant, codes):
    findings = scan_student_code(list(codes.items()))
    assert findings == [], f"{assignment} {variant}: honest code reported: {findings}"
    uses = forbidden_uses(load_rules(harness.SOLUTIONS / assignment), list(codes.items()))
    expected = {"mutant--naive-calls-torch-conv2d", "mutant--im2col-uses-unfold"}
    assert bool(uses) == (variant in expected), f"{assignment} {variant}: forbidden uses {uses}"


# --------------------------------------------------------------------------- chapter 3's rule

CH03 = harness.SOLUTIONS / "ch03_convolution"


@pytest.fixture(scope="module")
def rules() -> list[Rule]:
    return load_rules(CH03)


@pytest.fixture(scope="module")
def reference() -> dict[str, str]:
    return harness.variant_codes("ch03_convolution", [])[harness.REFERENCE]["convolution.ipynb"]


def _with(reference: dict[str, str], changes: dict[str, str]) -> list[tuple[str, str]]:
    """The reference cells, with some replaced or added (labels like ``"cell 12"`` are new cells)."""
    return list({**reference, **changes}.items())


def test_ch03_rule_is_the_exercise_text(rules):
    [rule] = rules
    assert rule.exercises == ("conv2d_naive", "conv2d_im2col")
    assert {"conv2d", "unfold", "Conv2d", "functional", "signal"} <= rule.names
    assert {"torch.nn.functional", "scipy"} <= set(rule.modules)
    assert "conv2d" in rule.why and "torch.nn.functional" in rule.why


def test_ch03_reference_is_clean(rules, reference):
    assert forbidden_uses(rules, list(reference.items())) == {}


@pytest.mark.parametrize("name, expected", [
    ("naive-calls-torch-conv2d", ["line 3: import torch.nn.functional", "line 5: torch.nn.functional.conv2d"]),
    ("im2col-uses-unfold", ["line 9: torch.nn.functional.unfold"]),
])
def test_ch03_mutants_that_call_the_library_are_flagged(rules, reference, name, expected):
    [mutant] = [m for m in harness.load_mutants("ch03_convolution") if m.name == name]
    cells = _with(reference, {mutant.cell: mutant.apply(reference[mutant.cell])})
    assert forbidden_uses(rules, cells) == {mutant.cell: expected}


NAIVE = "def conv2d_naive(x, w, b=None, stride=1, padding=0):\n    {body}\n"


@pytest.mark.parametrize("body, extra_cells, expected", [
    # an indirect helper, in another cell
    ("return _helper(x, w, b, stride, padding)",
     {"cell 12": "import torch.nn.functional as F2\n\n\ndef _helper(x, w, b, s, p):\n    return F2.conv2d(x, w, b, s, p)\n"},
     "cell 12, line 5 (in _helper): torch.nn.functional.conv2d"),
    # a helper of a helper
    ("return outer(x, w)",
     {"cell 12": "def outer(x, w):\n    return inner(x, w)\n", "cell 13": "def inner(x, w):\n    return x.unfold(2, 3, 1)\n"},
     "cell 13, line 2 (in inner): x.unfold"),
    # an alias imported in another cell
    ("return c(x, w, b, stride=stride, padding=padding)",
     {"cell 12": "from torch.nn.functional import conv2d as c"},
     "line 2: torch.nn.functional.conv2d"),
    # a module-level variable in another cell
    ("return library(x, w, b, stride, padding)", {"cell 12": "library = torch.conv2d"}, "line 2: torch.conv2d"),
    # names built at run time
    ("return getattr(F, 'conv' + '2d')(x, w, b, stride, padding)", {},
     "line 2: getattr with a name built at run time (so the static rule cannot vouch for it)"),
    ("return getattr(torch.nn.functional, 'conv2d')(x, w)", {}, "line 2: torch.nn.functional.conv2d"),
    ("return eval('F.conv' + '2d')(x, w)", {}, "line 2: eval (builds code or names at run time, so the static rule cannot vouch for it)"),
    ("return vars(torch)[name](x, w)", {}, "line 2: torch.__dict__[...] (builds code or names at run time, so the static rule cannot vouch for it)"),
    ("return globals()['helper'](x, w)", {}, "line 2: globals() (builds code or names at run time, so the static rule cannot vouch for it)"),
    ("return torch.nn.__dict__[name](x, w)", {}, "line 2: torch.nn.__dict__[...] (builds code or names at run time, so the static rule cannot vouch for it)"),
    ("return __import__('scipy.signal').signal.correlate(x, w)", {}, "line 2: scipy.signal.correlate"),
    ("return nn.Conv2d(1, 1, 3)(x)", {}, "line 2: torch.nn.Conv2d"),
    ("return F.pad(x, (1, 1))", {}, "line 2: torch.nn.functional.pad"),
])
def test_ch03_rule_follows_helpers_aliases_and_dynamic_names(rules, reference, body, extra_cells, expected):
    cells = _with(reference, {"conv2d_naive": NAIVE.format(body=body), **extra_cells})
    uses = forbidden_uses(rules, cells)
    assert set(uses) == {"conv2d_naive"} and expected in uses["conv2d_naive"], uses


def test_ch03_rule_follows_a_redefinition_in_another_cell(rules, reference):
    cells = _with(reference, {"cell 14": "conv2d_im2col = lambda x, w, b=None, stride=1, padding=0: F.conv2d(x, w, b)"})
    assert forbidden_uses(rules, cells) == {"conv2d_im2col": ["cell 14, line 1: torch.nn.functional.conv2d"]}


def test_ch03_rule_reads_a_solution_cell_without_a_def(rules, reference):
    cells = _with(reference, {"conv2d_naive": "import torch.nn.functional as G\nconv2d_naive = G.conv2d\n"})
    assert forbidden_uses(rules, cells) == {
        "conv2d_naive": ["line 1: import torch.nn.functional", "line 2: torch.nn.functional.conv2d"]
    }


def test_ch03_rule_ignores_code_that_only_checks_the_answer(rules, reference):
    check = "print((conv2d_naive(x, w) - F.conv2d(x, w)).abs().max())"
    cells = _with(reference, {
        "conv2d_naive": reference["conv2d_naive"] + "\n\n" + check + "\n",
        "cell 12": "import torch.nn.functional as F\n" + check,
        "cell 13": "def pad_input(x, p):\n    return torch.zeros(x.shape[0], x.shape[1], x.shape[2] + 2 * p, x.shape[3] + 2 * p)",
    })
    assert forbidden_uses(rules, cells) == {}


def test_rules_apply_only_to_their_exercises(reference):
    rule = Rule(("conv2d_im2col",), frozenset({"zeros"}), (), "no zeros")
    assert set(forbidden_uses([rule], list(reference.items()))) == {"conv2d_im2col"}


NUMPY_ONLY = Rule(("fit",), frozenset(), ("torch",), "NumPy only")
FIT = ("fit", "def fit(x):\n    return np.sum(x) + t.sum(x)\n")


def test_an_import_of_several_names_counts_only_against_the_names_the_exercise_uses():
    cells = [FIT, ("cell 3", "import numpy as np, torch\n")]  # fit uses np: torch is another name of the line
    assert forbidden_uses([NUMPY_ONLY], cells) == {}
    cells = [FIT, ("cell 3", "import numpy as np, torch as t\n")]  # fit uses t: the same line is followed
    assert forbidden_uses([NUMPY_ONLY], cells) == {"fit": ["line 2: torch.sum", "cell 3, line 1: import torch"]}


def test_assigning_to_a_forbidden_name_is_no_use_of_it_but_storing_one_as_a_value_is():
    monkeypatch = "import torch\ntorch.allclose = lambda *a, **k: True\n"  # the monkeypatch finding's business
    assert forbidden_uses([NUMPY_ONLY], [FIT, ("cell 3", monkeypatch)]) == {}
    stored = "import torch\nnp.sum = torch.sum\n"
    assert forbidden_uses([NUMPY_ONLY], [FIT, ("cell 3", stored)]) == {"fit": ["cell 3, line 2: torch.sum (used as a value)"]}


# --------------------------------------------------------------------------- the rules file


def test_no_rules_file_means_no_rules(tmp_path):
    assert load_rules(tmp_path) == []


@pytest.mark.parametrize("text, problem", [
    ("[[forbid]\nexercises = ['a']", "not valid TOML"),
    ("[rules]\nx = 1", "unknown top-level keys"),
    ("forbid = 3", "[[forbid]] tables"),
    ("[[forbid]]\nexercises = ['a']\nnames = ['conv2d']\nwhy = 'w'\ncolour = 'red'", "unknown keys"),
    ("[[forbid]]\nexercises = []\nnames = ['conv2d']\nwhy = 'w'", "at least one grade id"),
    ("[[forbid]]\nexercises = ['a']\nwhy = 'w'", "'names' or 'modules'"),
    ("[[forbid]]\nexercises = ['a']\nnames = 'conv2d'\nwhy = 'w'", "'names' must be a list"),
    ("[[forbid]]\nexercises = ['a']\nmodules = ['torch..nn']\nwhy = 'w'", "not names or dotted module names"),
    ("[[forbid]]\nexercises = ['a']\nnames = ['conv2d']", "'why' must be a non-empty string"),
])
def test_malformed_rules_file_is_an_error_naming_the_file(tmp_path, text, problem):
    (tmp_path / "integrity.toml").write_text(text)
    with pytest.raises(ValueError) as error:
        load_rules(tmp_path)
    assert str(tmp_path / "integrity.toml") in str(error.value) and problem in str(error.value)


def test_rules_file_is_never_released():
    assert not (harness.EXERCISES / "ch03_convolution" / "integrity.toml").exists()
    assert "integrity.toml" in harness.CONFIG.read_text()
