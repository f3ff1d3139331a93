"""The trusted side of a student's process: the session, proxies and handles, the tools' runner.

In the grader's process each name that a reference solution cell defines is a :class:`Proxy`;
calling it sends the arguments to the student's process **by value** (cloudpickle), runs the
student's code there and brings the result back as data (:mod:`grading.wire`). Nothing is copied
back: a change the student's code makes to an argument stays over there. A result that is not
plain data (a module, an optimizer, an object of the student's class) comes back as a
:class:`Remote` handle: it can be called, its attributes read, its methods called, iterated,
indexed, ``len()``-ed, and passed back to the student's functions and to the ``dlvision.testing``
tools, whose :class:`Runner` this module installs while a notebook's tests run.
"""

from __future__ import annotations

import builtins
import copy
import dis
import functools
import io
import operator
import pickle
import sys
import time
import types

import cloudpickle

from grading import wire
from grading.findings import Finding
from grading.sandbox import Limits, Sandbox

OBSERVED = ("monkeypatch", "ipython-hooks", "grader-files", "process-exit", "resource-abuse", "huge-output",
            "grader-detection", "network", "inputs-changed")  # what the student's process may report of itself


class StudentProcessGone(RuntimeError):
    """The student's process ended or was killed; the reason is the message."""


class ForbiddenOperation(RuntimeError):
    """The exercise's rule (``integrity.toml``) forbids what this code uses."""


class StudentError(Exception):
    """An exception of a type that only exists in the student's process."""


class Session:
    """One student's process, as the grader sees it. ``rules``: exercise -> ``{"exercise", "words",
    "modules", "why"}``; ``forbidden``: exercise -> what breaks its rule, once known; ``used``: notebook
    cell -> the ruled exercises its code called (a rule broken later zeroes those cells too)."""

    def __init__(self, sandbox: Sandbox, limits: Limits, rules: dict[str, dict] | None = None):
        self.sandbox, self.limits, self.rules = sandbox, limits, rules or {}
        self.sock = sandbox.spawn()
        self.deadline = time.monotonic() + limits.notebook_seconds
        self.gone: str | None = None  # why the process is gone, once it is
        self.findings: list[Finding] = []
        self.forbidden: dict[str, str] = {}
        self.cell = -1  # the notebook cell now running
        self.used: dict[int, set[str]] = {}
        self._origin: str | None = None  # the exercises whose code made the handles of the current reply

    def request(self, message: dict, label: str) -> dict:
        if self.gone:
            raise StudentProcessGone(self.gone)
        timeout = min(self.limits.cell_seconds, self.deadline - time.monotonic())
        try:
            if timeout <= 0:
                raise wire.ChannelTimeout("the notebook's time is used up")
            buffer = io.BytesIO()
            _Pickler(buffer, self).dump(message)
            wire.send_bytes(self.sock, buffer.getvalue())
            reply = wire.decode(wire.recv_bytes(self.sock, timeout), self._handle)
            if reply.get("status") not in ("ok", "error"):
                raise wire.Malformed("a reply without a status")
            return reply
        except (wire.ChannelTimeout, wire.ChannelClosed, wire.Malformed, OSError) as error:
            self._end(label, error, timeout)  # a malformed reply: the process is not trusted further
        raise StudentProcessGone(self.gone)

    def _end(self, label: str, error: Exception, timeout: float) -> None:
        self.sandbox.kill()
        status = self.sandbox.wait_exit()
        self.sock.close()
        if isinstance(error, wire.ChannelTimeout):
            used = "the notebook's time limit" if timeout < self.limits.cell_seconds else f"{timeout:.0f} s"
            self.gone = f"your code was stopped in {label} after {used} ({status}); later tests could not run"
            self.findings.append(Finding("resource-abuse", label, f"stopped after {used} ({status})", "sandbox"))
            return
        if isinstance(error, wire.Malformed):
            self.findings.append(Finding("malformed-reply", label, str(error), "sandbox"))
        elif "memory" in status:
            self.findings.append(Finding("resource-abuse", label, status, "sandbox"))
        self.gone = f"your notebook's process ended in {label} ({status}); later tests could not run"
        self.findings.append(Finding("kernel-died", label, f"the process {status}", "sandbox"))
        if status.startswith("exited"):
            self.findings.append(Finding("process-exit", label, f"the process {status}", "sandbox"))

    def _handle(self, number: int, type_name: str, text: str) -> Remote:
        return Remote(self, ("handle", number), type_name, text, self._origin)

    def run_cell(self, label: str, source: str, owned: bool, exports: list[str]) -> dict:
        return self.request({"op": "run_cell", "label": label, "source": source, "owned": owned,
                             "exports": exports}, label)

    def apply(self, function, args: tuple, kwargs: dict, *, label: str, mode: str = "auto", trusted: bool = False):
        """``function(*args, **kwargs)`` in the student's process; its result as data or handles."""
        # the student's functions this call can reach, however the test wrapped them (a partial, a closure)
        exercises = {r._grading_origin for r in _remotes((function, args, kwargs), code=True) if r._grading_origin}
        self.used.setdefault(self.cell, set()).update(exercises)
        for exercise in exercises & set(self.forbidden):
            raise ForbiddenOperation(f"{label}: {self.forbidden[exercise]}")
        self._origin = ",".join(sorted(exercises)) or None
        reply = self.request({"op": "call", "payload": (function, args, kwargs), "label": label, "mode": mode,
                              "trusted": trusted, "watch": [self.rules[e] for e in sorted(exercises) if e in self.rules]},
                             label)
        for output in reply.get("outputs", []):
            if isinstance(output, dict) and output.get("output_type") == "stream":
                (sys.stderr if output.get("name") == "stderr" else sys.stdout).write(str(output.get("text", "")))
        forbidden = reply.get("forbidden")
        if isinstance(forbidden, dict) and forbidden:
            for exercise, uses in forbidden.items():
                if exercise in self.rules and exercise not in self.forbidden:
                    detail = f"uses {'; '.join(map(str, uses))}"
                    self.forbidden[exercise] = f"{detail}: {self.rules[exercise]['why']}"
                    self.findings.append(Finding("forbidden-op", exercise, f"at run time: {detail}", "runtime"))
            raise ForbiddenOperation(f"{label}: " + "; ".join(self.forbidden.get(e, "") for e in forbidden))
        if reply["status"] != "ok":
            raise rebuild_error(reply)
        return reply.get("result")

    def observations(self) -> list[Finding]:
        """What the student's process saw itself do (nothing if it is gone or its reply is not well formed)."""
        try:
            reply = self.request({"op": "report"}, "the final report") if not self.gone else {}
        except StudentProcessGone:
            reply = {}
        return [Finding(item[0], item[1][:200], item[2][:1000], "runtime") for item in reply.get("observations", [])[:200]
                if isinstance(item, list) and len(item) == 3 and all(isinstance(x, str) for x in item)
                and item[0] in OBSERVED]

    def close(self) -> None:
        if self.gone is None:
            self.sock.close()
            self.sandbox.wait_exit()
            self.gone = "closed"


class _Pickler(cloudpickle.CloudPickler):
    """Pickles the grader's values by value, and the student's objects by reference."""

    def __init__(self, file, session: Session):
        super().__init__(file, protocol=5)
        self.session = session

    def persistent_id(self, obj):
        if type(obj) in (Remote, Proxy):
            if obj._grading_session is not self.session:
                raise ValueError(f"{obj!r} belongs to another notebook's process")
            return obj._grading_ref
        return None


def _remotes(value, depth: int = 6, code: bool = False) -> list:
    """The handles and proxies in ``value``, looked for in lists, tuples, dicts, sets and
    ``functools.partial`` objects (function, arguments, keywords); with ``code``, also in what a
    function reads (its closure, the globals its code names) and a bound method's object."""
    if type(value) in (Remote, Proxy):
        return [value]
    if depth == 0:
        return []
    if isinstance(value, functools.partial):
        items = [value.func, value.args, value.keywords]
    elif code and isinstance(value, types.MethodType):
        items = [value.__func__, value.__self__]
    elif code and isinstance(value, types.FunctionType):
        cells = [c.cell_contents for c in value.__closure__ or () if not _empty(c)]
        items = cells + [value.__globals__[n] for n in _code_names(value.__code__) if n in value.__globals__]
    elif type(value) in (list, tuple, dict, set, frozenset):
        items = list(value.keys()) + list(value.values()) if type(value) is dict else value
    else:
        return []
    return [r for item in items for r in _remotes(item, depth - 1, code)]


def _empty(cell) -> bool:
    try:
        cell.cell_contents  # noqa: B018
    except ValueError:
        return True
    return False


def _code_names(code: types.CodeType) -> set[str]:
    """The global names that a code object, and the code nested in it, read."""
    names = {i.argval for i in dis.get_instructions(code) if i.opname in ("LOAD_GLOBAL", "LOAD_NAME")}
    return names.union(*(_code_names(c) for c in code.co_consts if isinstance(c, types.CodeType)))


def rebuild_error(reply: dict) -> Exception:
    """The student's exception, as the same builtin type when there is one."""
    name, message, trace = str(reply.get("ename", "Exception")), str(reply.get("evalue", "")), reply.get("traceback")
    where = "".join(str(line) for line in trace[-6:]) if isinstance(trace, list) else ""
    text = f"{message}\n\n(raised in your code)\n{where}" if where else message
    kind = getattr(builtins, name, None)
    if isinstance(kind, type) and issubclass(kind, Exception):
        try:
            return kind(text)
        except Exception:
            pass
    return StudentError(f"{name}: {text}")


class Remote:
    """An object that stays in the student's process.

    It compares equal to nothing but itself, so no comparison can succeed by accident. Attributes,
    calls, iteration, ``len`` and indexing run over there; what comes back is data, or another
    handle. Names of Python's and IPython's protocols (``__x__``, ``_repr_x_``) are not forwarded.
    """

    __slots__ = ("_grading_session", "_grading_ref", "_grading_type", "_grading_text", "_grading_origin")

    def __init__(self, session: Session, ref: tuple, type_name: str, text: str, origin: str | None = None):
        for name, value in zip(self.__slots__, (session, ref, type_name, text, origin), strict=True):
            object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        return f"<{self._grading_type} from the student's process: {self._grading_text}>"

    def _grading_apply(self, function, *args, mode: str = "auto"):
        return self._grading_session.apply(function, (self, *args), {}, label=self._grading_label(), mode=mode)

    def _grading_label(self) -> str:
        return self._grading_type.rsplit(".", 1)[-1]

    def __getattr__(self, name: str):
        if name.startswith(("__", "_repr_", "_ipython_")):
            raise AttributeError(name)
        return self._grading_apply(getattr, name)

    def __setattr__(self, name, value):
        raise AttributeError(f"cannot set {name!r} on an object of the student's process (use beside() there)")

    def __call__(self, *args, **kwargs):
        return self._grading_session.apply(self, args, kwargs, label=self._grading_label())

    def __iter__(self):
        iterator = self._grading_apply(iter, mode="handle")
        while True:
            try:
                yield iterator._grading_apply(next)
            except StopIteration:
                return

    def __len__(self) -> int:
        return _checked(self._grading_apply(len), int, "len()")

    def __getitem__(self, key):
        return self._grading_apply(operator.getitem, key)

    def __contains__(self, item) -> bool:
        return _checked(self._grading_apply(operator.contains, item), bool, "in")

    def __eq__(self, other):
        return self is other

    def __ne__(self, other):
        return self is not other

    __hash__ = object.__hash__

    def __reduce__(self):
        raise pickle.PicklingError("an object of the student's process is sent by reference, not by value")


class Proxy(Remote):
    """Stands for a name that a reference solution cell defines (a function or a class)."""

    def __init__(self, session: Session, name: str, exercise: str):
        super().__init__(session, ("name", name), "function or class", name, exercise)
        object.__setattr__(self, "__name__", name)
        object.__setattr__(self, "__qualname__", name)

    def __repr__(self) -> str:
        return f"<{self.__name__} of the student's notebook>"

    def _grading_label(self) -> str:
        return self.__name__


def _checked(value, kind: type, what: str):
    if type(value) is not kind:
        raise TypeError(f"{what} of an object of the student's process gave {type(value).__name__}, not {kind.__name__}")
    return value


# --------------------------------------------------------------------------- the tools' runner


class Runner:
    """``dlvision.testing._runner`` while a notebook's tests run (see ``dlvision.testing``)."""

    def __init__(self, session: Session):
        self.session = session

    def beside(self, function, args: tuple, kwargs: dict):
        """``function(*args, **kwargs)``, in the student's process when a handle or proxy is among the
        arguments or bound in a ``functools.partial`` (the function travels by value: the grader's code,
        not the student's), else here."""
        if not _remotes((args, kwargs, function if isinstance(function, functools.partial) else None)):
            return function(*args, **kwargs)
        return self.session.apply(function, args, kwargs, label=getattr(function, "__name__", "beside"), trusted=True)

    def student_copy(self, value):
        return self.session.apply(_deep_copy, (value,), {}, label="student_copy", mode="handle", trusted=True)

    def fetch(self, value):
        if type(value) not in (Remote, Proxy):
            return copy.deepcopy(value)
        try:
            return self.session.apply(_same, (value,), {}, label="fetch", mode="data", trusted=True)
        except (TypeError, StudentError) as error:
            raise TypeError(f"fetch: {error}; for a module, use module_facts()") from None


def _deep_copy(value):  # these travel by value: copy.deepcopy is looked up when the libraries are restored
    import copy

    return copy.deepcopy(value)


def _same(value):
    return value


def install_runner(runner: Runner | None) -> None:
    """Set (or, with None, clear) the runner of the grader's ``dlvision.testing``."""
    try:
        import dlvision.testing
    except ImportError:
        return
    dlvision.testing._runner = runner


# the grader's tools and these helpers travel by value: the student's process may have changed its own copies
cloudpickle.register_pickle_by_value(sys.modules[__name__])
try:
    import dlvision.testing as _tools

    cloudpickle.register_pickle_by_value(_tools)
except ImportError:  # the course library is not installed: tests that use its tools fail on their own
    pass
