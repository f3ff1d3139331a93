"""Static rules on the student's code: tampering, and each exercise's forbidden operations.

Both questions are answered from the source of the student's cells (solution cells labelled by
grade id, the cells the student added ``"cell N"``), never by running it:

:func:`scan_student_code`
    what the code tries besides solving the exercises (patching numpy, IPython hooks, rigged
    objects, files, exits, processes, probing the environment, the network), as findings for
    the integrity report; it changes no grade (grades come from checks outside the sandbox).
:func:`forbidden_uses`
    which exercises break their rule of ``integrity.toml`` (:func:`load_rules`), e.g. "no
    ``conv2d`` in any form": the proxy for such a function raises, so its tests score 0.

Both read IPython syntax (magics, ``!shell`` lines) and resolve aliases (``import numpy as np``,
``from torch.nn import functional as F``, ``t = np.testing``), so that what they report names
the real module. A name bound anywhere in a scope counts as bound everywhere in it; names the
student's code uses without binding them resolve as the course's setup cells bind them (``np``,
``F``, ``check_array``, ...), or as the builtin or module of that name. A cell that does not
parse is skipped: the student's run shows the SyntaxError.
"""

from __future__ import annotations

import ast
import builtins
import re
import sys
import tomllib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from IPython.core.inputtransformer2 import TransformerManager

from grading.findings import Finding

RULES_FILE = "integrity.toml"
_CANNOT_VOUCH = "so the static rule cannot vouch for it"
_RUN_TIME_NAMES = f"builds code or names at run time, {_CANNOT_VOUCH}"

# What using a name means: (vector, or None for "nothing to report" that overrides a shorter
# prefix; a note; dotted names, each covering what is under it, a trailing "*" any name that
# starts so). The longest name that a use is under wins.
_USES: dict[str, tuple[str | None, str]] = {name: (vector, note) for vector, note, names in [
    ("monkeypatch", _RUN_TIME_NAMES, "builtins.eval builtins.exec builtins.compile builtins.__import__ importlib "
                                     "marshal types.FunctionType types.CodeType"),
    ("monkeypatch", "reloads modules", "importlib.reload"),
    ("monkeypatch", "installs a tracing hook", "sys.settrace sys.setprofile sys.monitoring sys.addaudithook "
                                               "threading.settrace threading.setprofile"),
    ("monkeypatch", "finds objects through the garbage collector", "gc.get_referrers gc.get_referents gc.get_objects"),
    ("monkeypatch", "writes memory directly", "ctypes _ctypes cffi"),
    ("monkeypatch", "walks the call stack", "sys._getframe sys._current_frames inspect.currentframe inspect.stack "
                                            "inspect.trace inspect.getouterframes traceback.walk_stack"),
    ("ipython-hooks", "", "get_ipython() IPython.get_ipython IPython.core sys.excepthook sys.displayhook "
                          "sys.unraisablehook sys.breakpointhook"),
    (None, "", "IPython.display"),
    ("ipython-hooks", "runs code when the process ends", "atexit"),
    ("grader-files", "opens files", "builtins.open io.open io.FileIO codecs.open os.open os.fdopen"),
    ("grader-files", "reads or writes files",
     "pathlib shutil glob sqlite3 sqlalchemy zipfile tarfile pickle shelve dill nbformat nbgrader os.listdir os.scandir "
     "os.walk os.remove os.unlink os.rename os.replace os.rmdir os.removedirs os.mkdir os.makedirs os.chdir os.chmod "
     "os.truncate os.symlink os.link os.path.exists os.path.isfile os.path.isdir os.path.getsize os.path.getmtime "
     "numpy.load numpy.save numpy.savez numpy.savez_compressed numpy.loadtxt numpy.savetxt numpy.genfromtxt "
     "numpy.fromfile numpy.memmap torch.load torch.save torch.from_file"),
    ("grader-files", "runs other programs", "subprocess pty os.system os.popen os.exec* os.spawn* os.posix_spawn*"),
    ("process-exit", "", "os._exit os.abort os.kill os.killpg sys.exit builtins.exit builtins.quit signal"),
    ("resource-abuse", "starts processes or threads", "os.fork os.forkpty multiprocessing torch.multiprocessing "
                                                      "concurrent.futures threading.Thread threading.Timer _thread"),
    ("resource-abuse", "changes resource limits", "resource"),
    ("grader-detection", "", "os.environ os.environb os.getenv os.getcwd os.getcwdb os.uname os.getlogin "
                             "socket.gethostname socket.getfqdn platform.node platform.uname getpass pwd psutil sys.argv "
                             "sys.orig_argv sys.modules __file__"),
    ("network", "", "socket ssl urllib urllib3 requests http httpx aiohttp ftplib smtplib xmlrpc webbrowser"),
] for name in names.split()}

# attributes that reach other frames or other modules' globals, whatever they are read from
_FRAME_ATTRIBUTES = frozenset("f_back f_globals f_locals f_builtins tb_frame gi_frame cr_frame __globals__ "
                              "__subclasses__".split())
# module state that changes how names resolve, and the methods that change it in place
_MODULE_STATE = frozenset("builtins sys.modules sys.path sys.meta_path sys.path_hooks".split())
_MUTATORS = frozenset("update setdefault pop popitem clear append insert extend remove __setitem__ __delitem__".split())
_HARMLESS_SETTINGS = ("matplotlib.", "torch.backends.", "pandas.options.")  # how things look, not what they compute
_SETATTR_FUNCTIONS = frozenset("builtins.setattr builtins.delattr builtins.object.__setattr__ "
                               "builtins.object.__delattr__ builtins.type.__setattr__".split())
_GETATTR_FUNCTIONS = frozenset({"builtins.getattr", "builtins.hasattr"})
# methods that make an object pretend (the last line: what the grader's tools read about a module)
_RIGGED_METHODS = frozenset("__eq__ __ne__ __lt__ __le__ __gt__ __ge__ __bool__ __float__ __int__ __index__ __array__ "
                            "__array_ufunc__ __array_function__ __torch_function__ __torch_dispatch__ __instancecheck__ "
                            "__subclasscheck__ __class__ __getattribute__ "
                            "named_parameters parameters named_buffers buffers named_modules modules state_dict".split())
_RIGGED_BASES = frozenset(
    "numpy.ndarray numpy.generic numpy.number numpy.floating numpy.integer numpy.float64 numpy.float32 numpy.int64 "
    "numpy.int32 torch.Tensor torch.nn.Parameter collections.UserDict collections.UserList collections.OrderedDict "
    "collections.defaultdict".split()) | {f"builtins.{t}" for t in "float int complex tuple list dict str bytes set "
                                                                     "frozenset type".split()}
_EXIT_EXCEPTIONS = frozenset({"builtins.SystemExit", "builtins.KeyboardInterrupt"})
# words in string literals: (vector, word, pattern)
_STRING_WORDS = [("grader-files", word, re.compile(pattern)) for word, pattern in [
    ("gradebook", r"gradebook"), (".db", r"\.db\b"), ("solutions", r"\bsolutions\b"), ("source/", r"\bsource/"),
    ("autograded", r"\bautograded\b"), ("submitted", r"\bsubmitted\b"), ("nbgrader", r"nbgrader")]] + [
    ("grader-detection", word, re.compile(pattern)) for word, pattern in [("/proc", r"/proc\b"), ("NBGRADER", "NBGRADER")]]
# IPython magics, by name
_CODE_MAGICS = frozenset({"time", "timeit"})  # their argument is Python code, scanned as such
_HARMLESS_MAGICS = _CODE_MAGICS | {"matplotlib", "pinfo", "pinfo2", "psearch", "who", "whos"}
_SHELL_MAGICS = frozenset({"system", "sx", "bash", "sh", "script"})
_PACKAGE_MAGICS = frozenset({"pip", "conda", "mamba"})
_TIMEIT_OPTIONS = re.compile(r"^\s*(?:-[nrp]\s*\d+\s*|-[tcqo]\s+)*")
# names that the course's setup and visible test cells bind, as they bind them
_DEFAULT_NAMES = {"np": "numpy", "F": "torch.nn.functional", "nn": "torch.nn", "plt": "matplotlib.pyplot",
                  "__builtins__": "builtins", "__file__": "__file__", "get_ipython": "IPython.get_ipython",
                  **{name: f"dlvision.testing.{name}" for name in ("check_array", "check_equal", "check_scalar",
                                                                   "check_type")}}
_BUILTIN_NAMES = frozenset(dir(builtins)) | {"exit", "quit"}
_MODULE_NAMES = frozenset(sys.stdlib_module_names) | set("numpy torch scipy dlvision IPython sklearn matplotlib "
                                                         "requests urllib3 httpx aiohttp sqlalchemy nbgrader nbformat "
                                                         "psutil cffi dill".split())
# what forbidden_uses treats as building names at run time (besides getattr with a computed name)
_NAME_BUILDERS = ("builtins.eval builtins.exec builtins.compile builtins.__import__ builtins.globals builtins.vars "
                  "builtins.locals globals() importlib marshal types.FunctionType types.CodeType sys.modules "
                  "operator.attrgetter operator.methodcaller get_ipython() IPython.get_ipython torch.ops torch._ops "
                  "torch._VF threading _thread concurrent multiprocessing sys.setprofile sys.settrace "
                  "sys.monitoring").split()
_NAME_BUILDING_ATTRIBUTES = frozenset("__dict__ __getattribute__ __getattr__ __globals__ f_globals f_back".split())
# the names under which the library's own code runs an operation that a rule names
_ALIASES = {"unfold": {"im2col"}, "Unfold": {"im2col"}, "fold": {"col2im"}, "Fold": {"col2im"},
            "max_pool2d": {"max_pool2d_with_indices"}, "avg_pool2d": {"avg_pool2d"}}
_MAX_DEPTH = 100  # code nested deeper is not read (a recursive walk could not take it); honest code stays far below
_TOO_DEEP = f"code nested more than {_MAX_DEPTH} levels deep, too deep to read, {_CANNOT_VOUCH}"
_TRANSFORMER = TransformerManager()


# --------------------------------------------------------------------------- parsing


@dataclass
class _Cell:
    """One student cell, parsed: its label, its top-level statements (those nested deeper than
    :data:`_MAX_DEPTH` apart: reported, not read) and the ids of its docstrings' nodes."""

    label: str
    statements: list[ast.stmt]
    too_deep: list[ast.stmt]
    docstrings: set[int]


def _parse(source: str) -> ast.Module | None:
    """A cell's syntax tree, IPython syntax turned into Python first (its line numbers the cell's); None
    if it does not parse."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escape sequences and the like: the student's run shows them
        try:
            tree = ast.parse(_TRANSFORMER.transform_cell(source))
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return None
    return ast.increment_lineno(tree, next((i for i, line in enumerate(source.splitlines()) if line.strip()), 0))


def _docstring_ids(tree: ast.AST) -> set[int]:
    """Ids of the string nodes that are docstrings (of the module, functions and classes)."""
    return {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body
            and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
            and isinstance(node.body[0].value.value, str)}


def _depth(node: ast.AST) -> int:
    """How deeply the syntax tree under ``node`` is nested (computed without recursion)."""
    deepest, stack = 0, [(node, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


def _parse_cells(cells: list[tuple[str, str]]) -> list[_Cell]:
    """The cells that parse, in order."""
    parsed = []
    for label, source in cells:
        if (tree := _parse(source)) is not None:
            deep = [statement for statement in tree.body if _depth(statement) > _MAX_DEPTH]
            parsed.append(_Cell(label, [s for s in tree.body if s not in deep], deep, _docstring_ids(tree)))
    return parsed


def defined_names(source: str) -> list[str]:
    """The names a cell's top level defines: functions, classes and assigned names, in order."""
    tree, names = _parse(source), []
    for node in tree.body if tree is not None else []:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names += [n.id for target in targets for n in ast.walk(target) if isinstance(n, ast.Name)]
    return list(dict.fromkeys(names))


# --------------------------------------------------------------------------- scopes and names

_NESTED_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef, ast.ListComp, ast.SetComp,
                  ast.DictComp, ast.GeneratorExp)


def _scope_nodes(nodes: list[ast.AST]) -> Iterator[ast.AST]:
    """The nodes of a scope in source order, without the insides of nested scopes (a nested function or
    class is itself there: it binds its name)."""
    stack = list(reversed(nodes))
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, _NESTED_SCOPES):
            stack.extend(reversed(list(ast.iter_child_nodes(node))))


def _import_aliases(node: ast.Import | ast.ImportFrom) -> dict[str, str]:
    """Name bound -> dotted name of what it stands for, for one import statement."""
    if isinstance(node, ast.Import):
        return {a.asname or a.name.split(".")[0]: a.name if a.asname else a.name.split(".")[0] for a in node.names}
    if node.level or not node.module:
        return {}  # a relative import: not a module the course knows
    return {a.asname or a.name: f"{node.module}.{a.name}" for a in node.names if a.name != "*"}


def _plain_bindings(nodes: list[ast.AST]) -> set[str]:
    """Names that the nodes bind otherwise than by importing."""
    names = set()
    for node in nodes:
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)) and node.name:
            names.add(node.name)
        elif isinstance(node, ast.ImportFrom) and (node.level or not node.module):
            names.update(a.asname or a.name for a in node.names)
    return names


class _Scope:
    """The names one scope binds: the notebook's top level (all cells), a function, a class body.

    ``aliases`` maps a name to the dotted name of what it stands for when that is a module or
    something reached from one (``np`` -> ``numpy``; ``t = np.testing`` -> ``numpy.testing``);
    ``plain`` holds the names bound otherwise. An alias wins over a plain binding of the same
    name: the suspicious reading is the one to check.
    """

    def __init__(self, nodes: list[ast.AST], parent: _Scope | None = None, params=(), is_class=False):
        self.parent, self.is_class, self.aliases = parent, is_class, {}
        found = list(_scope_nodes(nodes))
        for node in found:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                self.aliases.update(_import_aliases(node))
        self.plain = set(params) | _plain_bindings(found)
        for node in found:
            if isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets):
                if (path := _resolve(node.value, self)) is not None:
                    self.aliases.update({t.id: path for t in node.targets})

    def binding(self, name: str) -> tuple[_Scope | None, str | None]:
        """The scope that binds ``name`` (None: the student's code does not) and what it stands for."""
        scope = self
        while scope is not None:
            if name in scope.aliases:
                return scope, scope.aliases[name]
            if name in scope.plain:
                return scope, None
            scope = scope.parent
            while scope is not None and scope.is_class:  # a class body's names are not visible in its methods
                scope = scope.parent
        default = _DEFAULT_NAMES.get(name) or (f"builtins.{name}" if name in _BUILTIN_NAMES else None)
        return None, default or (name if name in _MODULE_NAMES else None)


def _parameters(args: ast.arguments) -> list[str]:
    return [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs + [a for a in (args.vararg, args.kwarg) if a]]


def _literal(node: ast.AST | None):
    """The value of a literal string or number node, else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, int)) and not isinstance(node.value, bool):
        return node.value
    return None


def _resolve(node: ast.AST, scope: _Scope, chain: list[ast.AST] | None = None) -> str | None:
    """The dotted name that ``node`` stands for when it is reached from a module, else None.

    Follows attributes, subscripts (``sys.modules["numpy"]``, ``vars(np)["allclose"]``,
    ``np.__dict__["allclose"]``, ``__builtins__["abs"]``, ``globals()["np"]``), ``getattr`` with a
    literal name, ``__import__``/``importlib.import_module`` of a literal, and ``get_ipython()``.
    The nodes that make up the resolved expression are appended to ``chain``.
    """
    path = None
    if isinstance(node, ast.Name):
        path = scope.binding(node.id)[1]
    elif isinstance(node, ast.Attribute):
        base = _resolve(node.value, scope, chain)
        path = None if base is None else f"{base}.{node.attr}"
    elif isinstance(node, ast.Subscript) and (base := _resolve(node.value, scope, chain)) is not None:
        key = _literal(node.slice)
        if isinstance(key, str) and base == "globals()":
            path = scope.binding(key)[1]
        elif isinstance(key, str) and (base == "builtins" or base.endswith(".__dict__")):
            path = f"{base.removesuffix('.__dict__')}.{key}"
        else:
            path = f"{base}[{key!r}]" if key is not None else f"{base}[...]"
    elif isinstance(node, ast.Call):
        path = _resolve_call(node, scope, chain)
    if path is not None and chain is not None:
        chain.append(node)
    return path


def _resolve_call(node: ast.Call, scope: _Scope, chain: list[ast.AST] | None) -> str | None:
    function, args = _resolve(node.func, scope, chain), node.args
    name = _literal(args[0]) if args else None
    if function in ("IPython.get_ipython", "IPython.core.getipython.get_ipython"):
        return "get_ipython()"
    if function in ("builtins.globals", "builtins.locals") and not args:
        return "globals()"
    if function in ("builtins.__import__", "importlib.import_module") and isinstance(name, str):
        if chain is not None:
            chain.append(args[0])
        return name if function == "importlib.import_module" or len(args) >= 4 else name.split(".")[0]
    if function == "builtins.vars" and len(args) == 1:
        base = _resolve(args[0], scope, chain)
        return None if base is None else f"{base}.__dict__"
    if function == "builtins.getattr" and len(args) >= 2 and isinstance(_literal(args[1]), str):
        base = _resolve(args[0], scope, chain)
        if base is not None and chain is not None:
            chain.append(args[1])
        return None if base is None else f"{base}.{args[1].value}"
    return None


def _under(path: str, key: str) -> bool:
    """Is ``path`` the dotted name ``key`` or something inside it (``key`` may end in ``*``)?"""
    if key.endswith("*"):
        return path.startswith(key[:-1])
    return path == key or path.startswith((key + ".", key + "["))


def _use_entry(path: str) -> tuple[str | None, str] | None:
    """The :data:`_USES` entry of the longest key that ``path`` is under, or None."""
    keys = [key for key in _USES if _under(path, key)]
    return _USES[max(keys, key=len)] if keys else None


def _display(path: str) -> str:
    """A dotted name as the student wrote it: builtins without their module."""
    return path.removeprefix("builtins.")


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _reaches_class_at_run_time(node: ast.AST, scope: _Scope) -> bool:
    """Does the expression go through ``type(...)`` or ``.__class__``, so that changing it changes a class?"""
    return any((isinstance(n, ast.Attribute) and n.attr == "__class__") or (
        isinstance(n, ast.Call) and len(n.args) == 1 and _resolve(n.func, scope) == "builtins.type") for n in ast.walk(node))


class _ScopedVisitor(ast.NodeVisitor):
    """Walks code with the scope in which each name is looked up (``self.scope``). ``covered`` holds
    the ids of nodes already examined as part of a longer expression (``os`` in ``os.environ``), so
    that each construct is reported once."""

    def __init__(self, scope: _Scope, docstrings: set[int]):
        self.scope, self.docstrings, self.function_depth, self.covered = scope, docstrings, 0, set()

    def resolve(self, node: ast.AST, chain: list[ast.AST] | None = None) -> str | None:
        return _resolve(node, self.scope, chain)

    def cover(self, chain: list[ast.AST]) -> None:
        self.covered.update(id(n) for n in chain)

    def visit_in_scope(self, nodes: list[ast.AST], scope: _Scope, function: bool) -> None:
        outer, self.scope = self.scope, scope
        self.function_depth += function
        for node in nodes:
            self.visit(node)
        self.function_depth -= function
        self.scope = outer

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for outer in [*node.decorator_list, node.args, node.returns]:
            if outer is not None:
                self.visit(outer)
        self.visit_in_scope(node.body, _Scope(node.body, self.scope, _parameters(node.args)), function=True)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self.visit(node.args)
        self.visit_in_scope([node.body], _Scope([node.body], self.scope, _parameters(node.args)), function=True)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for outer in [*node.decorator_list, *node.bases, *node.keywords]:
            self.visit(outer)
        self.visit_in_scope(node.body, _Scope(node.body, self.scope, is_class=True), function=False)

    def visit_comprehension_scope(self, node: ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp) -> None:
        parts = list(ast.iter_child_nodes(node))
        self.visit_in_scope(parts, _Scope(parts, self.scope), function=False)

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = visit_comprehension_scope


# --------------------------------------------------------------------------- the integrity scan


def scan_student_code(cells: list[tuple[str, str]]) -> list[Finding]:
    """What the student's code (``(label, source)`` of every student-owned code cell) tries besides
    solving the exercises: one finding per vector, cell and construct, its detail naming the construct
    and its line in the cell (``"line 3: assigns numpy.allclose"``)."""
    parsed = _parse_cells(cells)
    module = _Scope([statement for cell in parsed for statement in cell.statements])
    findings = []
    for cell in parsed:
        scanner = _IntegrityScanner(cell.label, module, cell.docstrings)
        if cell.too_deep:
            scanner.report("monkeypatch", cell.too_deep[0], "too deep", _TOO_DEEP)
        for statement in cell.statements:
            scanner.visit(statement)
        findings.extend(scanner.findings.values())
    return findings


class _IntegrityScanner(_ScopedVisitor):
    """The integrity findings of one cell."""

    def __init__(self, label: str, scope: _Scope, docstrings: set[int]):
        super().__init__(scope, docstrings)
        self.label, self.line_offset = label, 0  # line_offset: for code inside a magic's argument
        self.findings: dict[tuple[str, str], Finding] = {}

    def report(self, vector: str, node: ast.AST, construct: str, detail: str) -> None:
        """Record a finding, unless this cell already has one for the same vector and construct."""
        if (vector, construct) not in self.findings:
            line = getattr(node, "lineno", 1) + self.line_offset
            self.findings[vector, construct] = Finding(vector, self.label, f"line {line}: {detail}", "static")

    def report_use(self, node: ast.AST, path: str, verb: str = "uses") -> bool:
        """Report what using ``path`` means, if anything; True if it was reported."""
        vector, note = _use_entry(path) or (None, "")
        if vector is not None:
            self.report(vector, node, path, f"{verb} {_display(path)}" + (f" ({note})" if note else ""))
        return vector is not None

    def check_expression(self, node: ast.AST) -> None:
        """Report what a name, attribute, item or call stands for, once for the longest expression."""
        if id(node) in self.covered:
            return
        chain: list[ast.AST] = []
        path = self.resolve(node, chain)
        if path is not None and self.report_use(node, path):
            self.cover(chain)

    def check_store(self, target: ast.Attribute | ast.Subscript) -> None:
        """Assigning or deleting an attribute or item of a module, or of a class reached at run time."""
        verb, chain, text = "deletes" if isinstance(target.ctx, ast.Del) else "assigns", [], ast.unparse(target)
        if (path := self.resolve(target, chain)) is not None:
            self.cover(chain)
            self.report_store(target, path, verb)
        elif isinstance(target, ast.Attribute) and target.attr == "__class__":
            self.report("rigged-object", target, text, f"{verb} {text}")
        elif _reaches_class_at_run_time(target.value, self.scope):
            self.report("monkeypatch", target, text, f"{verb} {text} (changes a class it reached at run time)")

    def report_store(self, node: ast.AST, path: str, verb: str, how: str = "") -> None:
        """Report a change to ``path``: an IPython hook, or else a monkeypatch (display settings aside)."""
        if path.startswith("globals()"):
            self.report("monkeypatch", node, path, f"{verb} a global named at run time, {_CANNOT_VOUCH}")
        elif not path.startswith(_HARMLESS_SETTINGS):
            vector = "ipython-hooks" if (_use_entry(path) or (None,))[0] == "ipython-hooks" else "monkeypatch"
            self.report(vector, node, path, f"{verb} {path}{how}")

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self.check_expression(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.ctx, (ast.Store, ast.Del)):
            self.check_store(node)
        else:
            self.check_expression(node)
            if node.attr in _FRAME_ATTRIBUTES:
                self.report("monkeypatch", node, f".{node.attr}",
                            f"reads .{node.attr} (walks the call stack or reaches other modules' globals)")
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if isinstance(node.ctx, (ast.Store, ast.Del)):
            self.check_store(node)
        else:
            self.check_expression(node)
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.report_use(node, alias.name, "imports")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for alias in node.names if not node.level and node.module else []:
            self.report_use(node, f"{node.module}.{alias.name}", "imports")

    def visit_Constant(self, node: ast.Constant) -> None:
        if id(node) not in self.docstrings and isinstance(node.value, (str, bytes)):
            text = node.value if isinstance(node.value, str) else node.value.decode("latin-1")
            for vector, word, pattern in _STRING_WORDS:
                if pattern.search(text):
                    self.report(vector, node, word, f"mentions {word!r} in a string")

    def visit_Call(self, node: ast.Call) -> None:
        function = self.resolve(node.func)
        if self.check_magic(node, function):
            return
        self.check_expression(node)  # getattr(os, "environ"), get_ipython(), importlib.import_module("x")
        setattr_call = _setattr_call(node, function)
        if setattr_call is not None:
            self.check_setattr(node, *setattr_call)
        elif function in _GETATTR_FUNCTIONS and len(node.args) >= 2 and not isinstance(_literal(node.args[1]), str) \
                and self.resolve(node.args[0]) is not None:  # a module's attribute: what it reads cannot be told
            self.report("monkeypatch", node, _display(function),
                        f"{_display(function)} with a name built at run time, {_CANNOT_VOUCH}")
        elif function == "builtins.type" and len(node.args) == 3:
            self.report("rigged-object", node, "type()", "creates a class at run time with type(name, bases, namespace)")
        if isinstance(node.func, ast.Attribute) and node.func.attr in _MUTATORS:  # sys.modules.update(...) and the like
            chain: list[ast.AST] = []
            base = self.resolve(node.func.value, chain)
            if base is not None and (base in _MODULE_STATE or base.endswith(".__dict__")):
                self.cover(chain)
                self.report("monkeypatch", node, f"{base}.{node.func.attr}", f"changes {base} ({node.func.attr})")
        self.generic_visit(node)

    def check_setattr(self, node: ast.Call, obj: ast.AST, name: ast.AST, verb: str) -> None:
        """``setattr(obj, name, value)`` and its kin on a module or a class reached at run time (the
        student's own objects are theirs to change): a store, or a name built at run time."""
        attribute, chain = _literal(name), []
        base = self.resolve(obj, chain)
        if base is None and not _reaches_class_at_run_time(obj, self.scope):
            return
        if not isinstance(attribute, str):
            of = f" of {base}" if base else ""
            self.report("monkeypatch", node, f"setattr{of}", f"{verb} an attribute{of} named at run time, {_CANNOT_VOUCH}")
        elif base is not None:
            self.cover(chain)
            self.report_store(node, f"{base}.{attribute}", verb, " with setattr")
        else:
            text = f"{ast.unparse(obj)}.{attribute}"
            self.report("monkeypatch", node, text, f"{verb} {text} with setattr (changes a class it reached at run time)")

    def check_magic(self, node: ast.Call, function: str | None) -> bool:
        """Report an IPython magic or shell command (as IPython rewrote it); True if the call was one."""
        arguments = [_literal(a) for a in node.args]
        if function not in ("get_ipython().run_line_magic", "get_ipython().run_cell_magic", "get_ipython().system",
                            "get_ipython().getoutput") or not arguments or not all(isinstance(a, str) for a in arguments):
            return False
        if function.endswith(("system", "getoutput")):
            command = _shorten(arguments[0])
            self.report("grader-files", node, f"!{command}", f"runs the shell command !{command}")
            return True
        name = arguments[0]
        magic = ("%%" if function.endswith("cell_magic") else "%") + name
        if name in _CODE_MAGICS:  # the line argument is on the magic's line, a cell magic's body starts on the next
            outer = self.line_offset
            for index, code in enumerate(arguments[1:]):
                if (tree := _parse(_TIMEIT_OPTIONS.sub("", code, count=1) if index == 0 else code)) is not None:
                    self.docstrings = self.docstrings | _docstring_ids(tree)
                    self.line_offset = outer + node.lineno - 1 + index
                    if _depth(tree) > _MAX_DEPTH:
                        self.report("monkeypatch", node, "too deep", _TOO_DEEP)
                    else:
                        self.visit(tree)
            self.line_offset = outer
        elif name in _SHELL_MAGICS:
            self.report("grader-files", node, magic, f"runs shell commands with {magic}")
        elif name in _PACKAGE_MAGICS:
            self.report("network", node, magic, f"installs packages with {magic}")
        elif name not in _HARMLESS_MAGICS:
            self.report("ipython-hooks", node, magic, f"uses the {magic} magic")
        return True

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        defined = {s.name for s in node.body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))}
        for statement in node.body:
            if isinstance(statement, (ast.Assign, ast.AnnAssign)):
                targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
                defined.update(t.id for t in targets if isinstance(t, ast.Name))
        reasons = [f"subclasses {_display(p)}" for p in map(self.resolve, node.bases) if p in _RIGGED_BASES]
        reasons += ["has a metaclass"] * any(k.arg == "metaclass" for k in node.keywords)
        if rigged := sorted(defined & _RIGGED_METHODS):
            reasons.append(f"defines {', '.join(rigged)}")
        if reasons:
            self.report("rigged-object", node, f"class {node.name}", f"class {node.name} {' and '.join(reasons)}")
        super().visit_ClassDef(node)

    def visit_Raise(self, node: ast.Raise) -> None:
        exception = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
        if (path := self.resolve(exception) if exception is not None else None) in _EXIT_EXCEPTIONS:
            self.report("process-exit", node, path, f"raises {_display(path)}")
        self.generic_visit(node)

    def visit_While(self, node: ast.While) -> None:
        if self.function_depth == 0 and isinstance(node.test, ast.Constant) and node.test.value and not _breaks_out(
                node):
            self.report("resource-abuse", node, f"while loop, line {node.lineno}",
                        f"while {ast.unparse(node.test)} loop without a break at the top level of the cell")
        self.generic_visit(node)


def _setattr_call(node: ast.Call, function: str | None) -> tuple[ast.AST, ast.AST, str] | None:
    """(object, name, verb) when the call sets or deletes an attribute, else None."""
    if function in _SETATTR_FUNCTIONS and len(node.args) >= 2:
        return node.args[0], node.args[1], "deletes" if "delattr" in function else "assigns"
    if isinstance(node.func, ast.Attribute) and node.func.attr in ("__setattr__", "__delattr__") and node.args:
        return node.func.value, node.args[0], "deletes" if node.func.attr == "__delattr__" else "assigns"
    return None


def _breaks_out(loop: ast.While) -> bool:
    """Does a ``break`` of this loop (not of a loop or function nested in it) occur in its body?"""
    stack = list(loop.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Break):
            return True
        if isinstance(node, (ast.For, ast.AsyncFor, ast.While)):
            stack.extend(node.orelse)  # a break in a nested loop's body ends that loop only
        elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            stack.extend(ast.iter_child_nodes(node))
    return False


# --------------------------------------------------------------------------- per-exercise rules


@dataclass(frozen=True)
class Rule:
    """One ``[[forbid]]`` table of ``integrity.toml``: operations some exercises may not use."""

    exercises: tuple[str, ...]  # grade ids of the solution cells the rule applies to
    names: frozenset[str]  # forbidden attribute/name words, e.g. "conv2d", "unfold"
    modules: tuple[str, ...]  # forbidden module prefixes, e.g. "torch.nn.functional", "scipy"
    why: str  # sentence shown to the student and the instructor

    def words(self) -> set[str]:
        """The forbidden words with the names the library's own code gives the same operations
        (``torch.ops.aten.im2col`` is ``unfold``, ``aten.convolution`` every ``conv``), for the
        watch in the student's process."""
        words = set(self.names)
        for word in self.names:
            words |= _ALIASES.get(word, set()) | ({"convolution", "_convolution"} if word[:4] in ("conv", "Conv") else set())
        return words


def load_rules(assignment_source_dir: Path) -> list[Rule]:
    """The rules of ``<assignment_source_dir>/integrity.toml`` (none without the file); ValueError,
    naming the file and the problem, when it is malformed."""
    path = Path(assignment_source_dir) / RULES_FILE
    if not path.exists():
        return []
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path}: not valid TOML: {err}") from err
    if set(data) - {"forbid"}:
        raise ValueError(f"{path}: unknown top-level keys {sorted(set(data) - {'forbid'})}; write [[forbid]] tables")
    tables = data.get("forbid", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ValueError(f"{path}: 'forbid' must be [[forbid]] tables")
    rules = []
    for number, table in enumerate(tables, 1):
        where = f"{path}, [[forbid]] #{number}"
        if set(table) - {"exercises", "names", "modules", "why"}:
            raise ValueError(f"{where}: unknown keys {sorted(set(table) - {'exercises', 'names', 'modules', 'why'})}")
        for key in ("exercises", "names", "modules"):
            value = table.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
                raise ValueError(f"{where}: {key!r} must be a list of non-empty strings")
        exercises, names, modules, why = (table.get(k, []) for k in ("exercises", "names", "modules", "why"))
        if not exercises:
            raise ValueError(f"{where}: 'exercises' must name at least one grade id")
        if not names and not modules:
            raise ValueError(f"{where}: give at least one of 'names' or 'modules'")
        bad = [n for n in names if not n.isidentifier()] + [m for m in modules if not all(
            p.isidentifier() for p in m.split("."))]
        if bad:
            raise ValueError(f"{where}: {bad} are not names or dotted module names")
        if not isinstance(why, str) or not why.strip():
            raise ValueError(f"{where}: 'why' must be a non-empty string")
        rules.append(Rule(tuple(exercises), frozenset(names), tuple(modules), why.strip()))
    return rules


def forbidden_uses(rules: list[Rule], cells: list[tuple[str, str]],
                   exports: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    """For each exercise (grade id) whose code breaks a rule, the offending uses.

    An exercise's code is its solution cell (labelled by its grade id in ``cells``: its functions
    and classes, or every statement if it defines none), the definitions in any cell of the names
    the reference solution cell defines (``exports``; without it, those the student's cell defines:
    a function redefined in a later cell is what runs), and, transitively, the definitions of the
    top-level names that code uses (helpers, variables, imports). Besides, a forbidden operation
    used as a value anywhere (stored in a module attribute or a container: ``np.mm = F.conv2d``)
    counts against every exercise of the rule. A use reads ``"line 5: torch.nn.functional.conv2d"``
    in the exercise's own cell and ``"cell 7, line 2 (in helper): ..."`` elsewhere. Building names or
    code at run time (``getattr`` with a computed name, ``eval``, ``exec``, ``__import__``,
    ``importlib``, ``globals()``, ``vars()``, ``__dict__``, ``torch.ops``, threads, tracers) counts as
    a use: the grader cannot vouch for such code.
    """
    parsed = _parse_cells(cells)
    module = _Scope([statement for cell in parsed for statement in cell.statements])
    definitions: dict[str, list[tuple[_Cell, ast.stmt]]] = {}  # name -> the top-level statements that bind it
    for cell in parsed:
        for statement in cell.statements + cell.too_deep:
            if isinstance(statement, (ast.Import, ast.ImportFrom)) and statement in cell.statements:
                parts = [ast.copy_location(ast.Import([a]) if isinstance(statement, ast.Import) else ast.ImportFrom(
                    statement.module, [a], statement.level), statement) for a in statement.names]
            else:
                parts = [statement]
            for part in parts:  # one import statement of several names: a name follows its own import only
                nodes = list(_scope_nodes([part]))
                names = _plain_bindings(nodes).union(*(_import_aliases(n) for n in nodes if isinstance(
                    n, (ast.Import, ast.ImportFrom))))
                for name in names:
                    definitions.setdefault(name, []).append((cell, part))
    by_label, uses = {cell.label: cell for cell in parsed}, {}
    for rule in rules:
        escaped = []
        for cell in parsed:
            checker = _RuleChecker(rule, module, cell.docstrings, escapes_only=True)
            for statement in cell.statements:
                checker.visit(statement)
            escaped += [f"{cell.label}, line {line}: {what} (used as a value)" for line, what in checker.uses]
        for exercise in rule.exercises:
            found = _exercise_uses(rule, by_label.get(exercise), (exports or {}).get(exercise), definitions, module)
            known = uses.setdefault(exercise, [])
            known += [use for use in found + escaped if use not in known]
    return {exercise: found for exercise, found in uses.items() if found}


def _exercise_uses(rule: Rule, cell: _Cell | None, names: list[str] | None, definitions: dict, module: _Scope):
    """The uses that break ``rule`` in the code of an exercise (its cell, and where its names are defined)."""
    statements = sorted(cell.statements + cell.too_deep, key=lambda s: s.lineno) if cell else []
    functions = [s for s in statements if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    queue = [(cell, s) for s in functions or statements]
    for name in names if names is not None else [f.name for f in functions]:
        queue += definitions.get(name, [])
    seen, uses = set(), []
    while queue:
        where, statement = queue.pop(0)
        if id(statement) in seen:
            continue
        seen.add(id(statement))
        if statement in where.too_deep:
            found, used_names = [(statement.lineno, _TOO_DEEP)], set()
        else:
            checker = _RuleChecker(rule, module, where.docstrings)
            checker.visit(statement)
            found, used_names = checker.uses, checker.module_names
        for line, what in found:
            inside = f" (in {statement.name})" if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                           ast.ClassDef)) else ""
            use = f"line {line}: {what}" if cell and where.label == cell.label else (
                f"{where.label}, line {line}{inside}: {what}")
            if use not in uses:
                uses.append(use)
        for name in sorted(used_names):
            queue += definitions.get(name, [])
    return uses


class _RuleChecker(_ScopedVisitor):
    """The uses in one statement that break a rule, and the top-level names the statement uses.
    ``escapes_only``: only forbidden operations used as values (not called) count."""

    def __init__(self, rule: Rule, scope: _Scope, docstrings: set[int], escapes_only: bool = False):
        super().__init__(scope, docstrings)
        self.rule, self.escapes_only = rule, escapes_only
        self.called: set[int] = set()  # ids of the nodes that are called (not used as values)
        self.uses: list[tuple[int, str]] = []  # (line in the cell, what is used)
        self.module_names: set[str] = set()

    def flag(self, node: ast.AST, what: str, escape: bool = False) -> None:
        if not (self.escapes_only and (not escape or id(node) in self.called)) and (node.lineno, what) not in self.uses:
            self.uses.append((node.lineno, what))

    def forbidden(self, path: str) -> bool:
        """Is the dotted name in a forbidden module, or does it contain a forbidden word?"""
        return any(_under(path, m) for m in self.rule.modules) or bool(self.rule.names & set(path.split(".")))

    def check_expression(self, node: ast.AST) -> bool:
        """Flag what a name, attribute, item or call resolves to; True if it resolved."""
        chain: list[ast.AST] = []
        if id(node) in self.covered:
            return True
        if (path := self.resolve(node, chain)) is None:
            return False
        self.cover(chain)
        if self.forbidden(path):  # assigning to a forbidden name (a monkeypatch) is no escape of it
            self.flag(node, _display(path), escape=not isinstance(getattr(node, "ctx", None), (ast.Store, ast.Del)))
        elif _builds_names(path):
            self.flag(node, f"{_display(path)} ({_RUN_TIME_NAMES})")
        return True

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            scope, _ = self.scope.binding(node.id)
            if scope is None or scope.parent is None:
                self.module_names.add(node.id)
            if not self.check_expression(node) and scope is None and node.id in self.rule.names:
                self.flag(node, node.id)  # a name the student's code does not define, e.g. after a star import

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if not self.check_expression(node):
            if node.attr in self.rule.names:
                self.flag(node, _shorten(ast.unparse(node)))
            elif node.attr in _NAME_BUILDING_ATTRIBUTES:
                self.flag(node, f"{_shorten(ast.unparse(node))} ({_RUN_TIME_NAMES})")
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        self.check_expression(node)
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign | ast.AnnAssign) -> None:
        if all(isinstance(target, ast.Name) for target in (node.targets if isinstance(node, ast.Assign) else [node.target])):
            self.called.add(id(node.value))  # a plain alias: the scope follows it, it is no escape
        self.generic_visit(node)

    visit_AnnAssign = visit_Assign

    def visit_Call(self, node: ast.Call) -> None:
        self.called.add(id(node.func))
        function = self.resolve(node.func)
        if function in _GETATTR_FUNCTIONS and node.args:
            self.called.add(id(node.args[0]))  # reading an attribute is no escape (a computed name is flagged)
        named = function in _GETATTR_FUNCTIONS or function in _SETATTR_FUNCTIONS
        if named and len(node.args) >= 2 and not isinstance(_literal(node.args[1]), str):
            self.flag(node, f"{_display(function)} with a name built at run time ({_CANNOT_VOUCH})")
        self.check_expression(node)
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
        paths = [a.name for a in node.names] if isinstance(node, ast.Import) else [
            f"{node.module}.{a.name}" for a in node.names] if not node.level and node.module else []
        for path in paths:
            if self.forbidden(path.removesuffix(".*")):
                self.flag(node, f"import {path}")
            elif _builds_names(path):
                self.flag(node, f"import {path} ({_RUN_TIME_NAMES})")

    visit_ImportFrom = visit_Import

    def visit_Constant(self, node: ast.Constant) -> None:
        if id(node) not in self.docstrings and isinstance(node.value, str) and self.rule.names & set(
                node.value.split(".")):
            self.flag(node, repr(node.value))


def _builds_names(path: str) -> bool:
    """Does the dotted name look names up at run time (``eval``, ``importlib``, ``x.__dict__[...]``)?"""
    parts = {part.split("[")[0] for part in path.split(".")}
    return any(_under(path, key) for key in _NAME_BUILDERS) or bool(parts & _NAME_BUILDING_ATTRIBUTES)
