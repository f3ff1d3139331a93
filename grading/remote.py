"""The trusted side of a student's process: requests, proxies, limits.

In the grader's process each function a solution cell exports is a
:class:`StudentFunction`. Calling it sends the arguments to the student's process,
runs the student's function there, and brings back the result as plain data (see
:mod:`grading.wire`), copying in-place changes of the arguments back into the
caller's objects, so that hidden tests behave as they would in one kernel while
their comparisons run here, out of the student's reach.
"""

from __future__ import annotations

import builtins
import io
import pickle
import sys
import time

import cloudpickle

from grading import wire
from grading.findings import Finding
from grading.sandbox import Limits, Sandbox


class StudentProcessGone(RuntimeError):
    """The student's process ended or was killed; the reason is the message."""


class ForbiddenOperation(RuntimeError):
    """The exercise's static rule forbids what this function uses."""


class StudentError(Exception):
    """An exception of a type that only exists in the student's process."""


class StudentSession:
    """One student's process, as the grader sees it."""

    def __init__(self, sandbox: Sandbox, limits: Limits):
        self.sandbox, self.limits = sandbox, limits
        self.sock, self.pid = sandbox.spawn()
        self.deadline = time.monotonic() + limits.notebook_seconds
        self.gone: str | None = None  # why the process is gone, once it is
        self.findings: list[Finding] = []

    def request(self, message: dict, label: str, known: list | None = None) -> dict:
        if self.gone:
            raise StudentProcessGone(self.gone)
        timeout = min(self.limits.cell_seconds, self.deadline - time.monotonic())
        try:
            if timeout <= 0:
                raise wire.ChannelTimeout("the notebook's time is used up")
            wire.send_bytes(self.sock, pickle.dumps(message, protocol=5))
            return wire.loads_plain(wire.recv_bytes(self.sock, timeout), known)
        except wire.ChannelTimeout:
            self._end(label, timed_out=timeout)
        except (wire.ChannelClosed, wire.MessageTooLarge, OSError) as error:
            self._end(label, error=error)
        except Exception as error:  # a reply that is not a plain-data message: the process is not trusted further
            self._end(label, error=error)
        raise StudentProcessGone(self.gone)

    def _end(self, label: str, timed_out: float | None = None, error: Exception | None = None) -> None:
        self.sandbox.kill()
        status = self.sandbox.wait_exit()
        self.sock.close()
        if timed_out is not None:
            used = "the notebook's time limit" if timed_out < self.limits.cell_seconds else f"{timed_out:.0f} s"
            self.gone = f"your code was stopped in {label} after {used} ({status}); later tests could not run"
            self.findings.append(Finding("resource-abuse", label, f"stopped after {used} ({status})", "sandbox"))
            return
        if isinstance(error, wire.MessageTooLarge):
            self.findings.append(Finding("huge-output", label, str(error), "sandbox"))
        elif error is not None and not isinstance(error, (wire.ChannelClosed, OSError)):
            self.findings.append(Finding("rigged-object", label, f"sent a malformed reply: {error}", "sandbox"))
        self.gone = f"your notebook's process ended in {label} ({status}); later tests could not run"
        self.findings.append(Finding("kernel-died", label, f"the process {status}", "sandbox"))
        if status.startswith("exited"):
            self.findings.append(Finding("process-exit", label, f"the process {status}", "sandbox"))

    def run_cell(self, label: str, source: str, owned: bool) -> dict:
        return self.request({"op": "run_cell", "label": label, "source": source, "owned": owned}, label)

    def observations(self) -> list[Finding]:
        """What the student's process saw itself do (empty if it is gone)."""
        if self.gone:
            return []
        try:
            reply = self.request({"op": "report"}, "the final report")
        except StudentProcessGone:
            return []
        return [Finding(str(v), str(c), str(d), "runtime") for v, c, d in reply["observations"]]

    def close(self) -> None:
        if self.gone is None:
            self.sock.close()
            self.sandbox.wait_exit()
            self.gone = "closed"


class StudentFunction:
    """Stands for a function of the student's notebook; calling it runs it over there."""

    def __init__(self, session: StudentSession, name: str, forbidden: list[str] | None = None, why: str = ""):
        self.session, self.__name__, self.forbidden, self.why = session, name, forbidden, why
        self.__qualname__ = name

    def __repr__(self) -> str:
        return f"<function {self.__name__} of the student's notebook>"

    def __call__(self, *args, **kwargs):
        if self.forbidden:
            raise ForbiddenOperation(f"{self.__name__} uses {', '.join(self.forbidden)}: {self.why}")
        known = flatten((args, kwargs))
        payload = dumps_arguments((args, kwargs))
        reply = self.session.request({"op": "call", "name": self.__name__, "payload": payload},
                                     self.__name__, known)
        sys.stdout.write(reply.get("stdout", ""))
        sys.stderr.write(reply.get("stderr", ""))
        if "args_after" in reply:
            after_args, after_kwargs = wire.loads_plain(reply["args_after"])
            for original, new in zip(args, after_args, strict=False):
                write_back(original, new)
            for key, original in kwargs.items():
                write_back(original, after_kwargs.get(key))
        if reply["status"] != "ok":
            raise rebuild_error(reply)
        for item in flatten(reply["result"]) + [reply["result"]]:
            if isinstance(item, wire.RemoteObject):
                self.session.findings.append(Finding(
                    "rigged-object", self.__name__, f"returned {item!r}, which is not plain data", "sandbox"))
                break
        return reply["result"]


def rebuild_error(reply: dict) -> Exception:
    """The student's exception, as the same builtin type when there is one."""
    name, message = str(reply.get("ename", "Exception")), str(reply.get("evalue", ""))
    where = "".join(str(line) for line in reply.get("traceback", [])[-6:])
    text = f"{message}\n\n(raised in your code)\n{where}" if where else message
    kind = getattr(builtins, name, None)
    if isinstance(kind, type) and issubclass(kind, Exception):
        try:
            return kind(text)
        except Exception:
            pass
    return StudentError(f"{name}: {text}")


# --------------------------------------------------------------------------- arguments


class _ArgumentPickler(cloudpickle.CloudPickler):
    """Pickles test arguments by value, and the student's own objects by reference."""

    def persistent_id(self, obj):
        if isinstance(obj, StudentFunction):
            return ("global", obj.__name__)
        if isinstance(obj, wire.RemoteObject):
            return ("remote", obj.handle)
        return None


def dumps_arguments(value) -> bytes:
    buffer = io.BytesIO()
    _ArgumentPickler(buffer, protocol=5).dump(value)
    return buffer.getvalue()


def flatten(value, depth: int = 3) -> list:
    """Objects inside ``value`` that a result may return as themselves, in a fixed order.

    The student's side walks its copy of the arguments the same way, so index ``i``
    names the same argument on both sides.
    """
    found: list = []

    def walk(item, level):
        if type(item) in wire.PLAIN_SCALARS:
            return
        found.append(item)
        if level == 0:
            return
        if type(item) in (tuple, list):
            for element in item:
                walk(element, level - 1)
        elif type(item) is dict:
            for element in item.values():
                walk(element, level - 1)

    walk(value, depth)
    return found[1:]  # not the (args, kwargs) pair itself


def write_back(original, new):
    """Copy the student's in-place changes of an argument into the trusted object."""
    import numpy as np

    torch = sys.modules.get("torch")
    if isinstance(original, np.ndarray) and isinstance(new, np.ndarray):
        if (original.shape == new.shape and original.flags.writeable
                and not np.array_equal(original, new, equal_nan=original.dtype.kind in "fc")):
            original[...] = new
    elif torch is not None and isinstance(original, torch.Tensor) and isinstance(new, torch.Tensor):
        if original.shape == new.shape and not torch.equal(original.detach(), new.to(original.dtype)):
            with torch.no_grad():
                original.copy_(new)
    elif type(original) is dict and type(new) is dict:
        for key in list(original):
            if key not in new:
                del original[key]
        for key, value in new.items():
            original[key] = write_back(original[key], value) if key in original else value
    elif type(original) is list and type(new) is list:
        if len(original) == len(new):
            for index, value in enumerate(new):
                original[index] = write_back(original[index], value)
        else:
            original[:] = new
    elif isinstance(original, np.random.Generator) and isinstance(new, np.random.Generator):
        original.bit_generator.state = new.bit_generator.state
    return original
