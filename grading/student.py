"""What runs inside the sandbox: a fork server, and the student's process it forks.

``python -m grading.student CONTROL_FD MODULES`` is started by :mod:`grading.sandbox`
inside bubblewrap. It imports the heavy modules once (numpy, torch, IPython: the
*warm* part, worth about two seconds a notebook), then serves ``fork`` requests on the
control socket: each forks one **student process**, whose end of a fresh socket pair
goes back to the grader (``SCM_RIGHTS``). When that process ends, the server kills
whatever it left behind in the sandbox's PID namespace, wipes the scratch folder, and
reports how it ended, before it takes the next request.

The student process runs the student's cells in an IPython shell (magics work as in
Jupyter) and answers ``run_cell``/``call``/``get``/``report`` requests. Everything it
sends back goes through :func:`grading.wire.dumps_plain`: plain data or handles.
Its integrity observations (replaced library functions, IPython hooks, file and
network access, environment probes) are for the report only: grades never depend on
anything this process says about itself.
"""

from __future__ import annotations

import io
import os
import pickle
import resource
import shutil
import signal
import socket
import sys
import time
import traceback

from grading import wire
from grading.remote import flatten

WORK = "/scratch"  # the student's scratch folder inside the sandbox (a tmpfs)
STUDENT_CELL = "<student cell "  # code objects of the student's cells are named "<student cell fit>"
COURSE_CELL = "<course cell "  # instructor cells (setup, data) that also run here

# --------------------------------------------------------------------------- fork server


def serve(control_fd: int, preload: list[str], mounted: list[str]) -> None:
    for module in preload:
        try:
            __import__(module)
        except Exception as error:  # a missing optional module is not fatal for the server
            print(f"grading.student: could not preload {module}: {error}", file=sys.stderr)
    control = socket.socket(fileno=control_fd)
    while True:
        try:
            request = pickle.loads(wire.recv_bytes(control))
        except wire.ChannelClosed:
            return
        if request["op"] != "fork":
            continue
        ours, theirs = socket.socketpair()
        pid = os.fork()
        if pid == 0:  # the student's process
            control.close()
            ours.close()
            try:
                _student_main(theirs, request["limits"])
            except BaseException:
                traceback.print_exc()  # only visible with GRADING_DEBUG=1
                os._exit(70)
            os._exit(0)
        theirs.close()
        socket.send_fds(control, [pickle.dumps({"pid": pid})], [ours.fileno()])
        ours.close()
        status = _wait_for(pid, control)
        _kill_leftovers()
        _wipe(WORK, mounted)
        _wipe("/tmp", mounted)
        wire.send_bytes(control, pickle.dumps({"exit": status}))


def _wait_for(pid: int, control: socket.socket) -> str:
    """Wait until the student's process ends, killing it when the grader asks."""
    control.setblocking(False)
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return _describe_status(status)
            try:
                data = control.recv(1 << 16)
            except BlockingIOError:
                data = None
            if data == b"":  # the grader went away
                os.kill(pid, signal.SIGKILL)
            elif data:  # any byte is a kill request (see Sandbox.kill)
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.005)
    finally:
        control.setblocking(True)


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        return f"killed by signal {number} ({signal.Signals(number).name})"
    return f"exited with status {os.WEXITSTATUS(status)}"


def _kill_leftovers() -> None:
    """Kill every process of the sandbox except its init (PID 1) and this server."""
    for _ in range(20):
        others = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, os.getpid())]
        if not others:
            return
        for pid in others:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        while True:
            try:
                if os.waitpid(-1, os.WNOHANG) == (0, 0):
                    break
            except ChildProcessError:
                break
        time.sleep(0.01)


def _wipe(folder: str, mounted: list[str]) -> None:
    """Delete everything in ``folder`` except the read-only mounts (and the folders leading to them)."""
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if path in mounted:
            continue
        if any(m.startswith(path + "/") for m in mounted):
            _wipe(path, mounted)
        elif os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            _ignore_errors(os.unlink, path)


def _ignore_errors(function, *args):
    try:
        function(*args)
    except OSError:
        pass


# --------------------------------------------------------------------------- the student's process

AUDITED = frozenset({
    "open", "socket.connect", "socket.bind", "socket.getaddrinfo", "os.fork", "os.forkpty", "os.posix_spawn",
    "subprocess.Popen", "os.system", "os.exec", "os.listdir", "os.scandir", "os.remove", "os.rename",
    "os.chdir", "sqlite3.connect", "sys.settrace", "sys.setprofile",
})


def _student_main(sock: socket.socket, limits: dict) -> None:
    keep_stderr = bool(os.environ.get("GRADING_DEBUG"))
    for fd in (0, 1) if keep_stderr else (0, 1, 2):  # raw writes go nowhere; print() is captured per cell
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, fd)
        os.close(null)
    _set_limits(limits)
    os.chdir(WORK)
    StudentProcess(sock, limits).serve()


def _set_limits(limits: dict) -> None:
    """Memory, processes, file size: enforced by the kernel from here on."""
    with open("/proc/self/statm") as statm:
        mapped = int(statm.read().split()[0]) * resource.getpagesize()
    memory = mapped + int(limits["memory_bytes"])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    # RLIMIT_NPROC counts processes and threads of this user in the sandbox's namespace
    resource.setrlimit(resource.RLIMIT_NPROC, (limits["processes"], limits["processes"]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_bytes"], limits["file_bytes"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


class StudentProcess:
    """Runs the student's cells and answers calls from the trusted grader."""

    def __init__(self, sock: socket.socket, limits: dict):
        self.sock = sock
        self.output_bytes = int(limits["output_bytes"])
        self.handles: dict[int, object] = {}
        self.observations: list[tuple[str, str, str]] = []  # (vector, cell, detail)
        self.current = ""  # the cell or call being run, for observations
        self.shell = _make_shell()
        self.watch = LibraryWatch()
        # where reading is ordinary: the Python installation (imports) and the scratch folder
        self.readable = tuple({WORK, "/tmp", "/dev/", "/usr/", "/proc/self/", sys.prefix, sys.base_prefix,
                               *(p for p in sys.path if p.startswith("/"))})
        sys.addaudithook(self._audit)
        # a process the student's code forks must not answer the grader in its parent's place
        os.register_at_fork(after_in_child=self.sock.close)
        os.environ = _RecordingEnviron(os.environ, self._environ_read)  # noqa: B003 (replaced on purpose: reads are recorded)

    # ---- observations (for the integrity report only)

    def observe(self, vector: str, detail: str) -> None:
        if all((v, d) != (vector, detail) for v, _, d in self.observations) and len(self.observations) < 200:
            self.observations.append((vector, self.current, detail))

    def _audit(self, event: str, args) -> None:
        if event not in AUDITED or not _called_from_cell():  # (sys._getframe is itself audited)
            return
        if event == "open":
            path = args[0]
            if isinstance(path, (str, bytes)) and not os.fsdecode(path).startswith(self.readable):
                self.observe("grader-files", f"opens {os.fsdecode(path)!r}")
        elif event in ("socket.connect", "socket.bind", "socket.getaddrinfo"):
            self.observe("network", f"{event} {args[1:] if event != 'socket.getaddrinfo' else args[:2]!r}")
        elif event in ("os.fork", "os.forkpty", "os.posix_spawn", "subprocess.Popen", "os.system", "os.exec"):
            self.observe("resource-abuse", f"starts a process ({event})")
        elif event in ("os.listdir", "os.scandir", "os.remove", "os.rename", "os.chdir", "sqlite3.connect"):
            self.observe("grader-files", f"{event} {args[0]!r}")
        elif event == "sys.settrace" or event == "sys.setprofile":
            self.observe("monkeypatch", f"installs a tracer ({event})")

    def _environ_read(self, key) -> None:
        if _called_from_cell():
            self.observe("grader-detection", f"reads the environment variable {key!r}")

    def _observe_error(self, error: BaseException | None) -> None:
        if isinstance(error, SystemExit):
            self.observe("process-exit", "raises SystemExit (sys.exit)")
        elif isinstance(error, MemoryError):
            self.observe("resource-abuse", "runs out of memory (the grader's limit)")
        elif isinstance(error, BlockingIOError | PermissionError) and "fork" in str(error).lower():
            self.observe("resource-abuse", "hits the limit on processes")

    def _check_tampering(self) -> None:
        for detail in self.watch.changes():
            self.observe("monkeypatch", detail)
        for detail in _hook_changes(self.shell, self.hooks_before):
            self.observe("ipython-hooks", detail)

    # ---- requests

    def serve(self) -> None:
        self.hooks_before = _hook_state(self.shell)
        while True:
            try:
                request = pickle.loads(wire.recv_bytes(self.sock))
            except wire.ChannelClosed:
                return
            self.known_ids = {}
            reply = getattr(self, "op_" + request["op"])(request)
            self._send(reply, self.known_ids)

    def _send(self, reply: dict, known_ids: dict[int, int]) -> None:
        try:
            data = wire.dumps_plain(reply, known_ids, self._keep)
        except BaseException as error:  # a reply that cannot be pickled (e.g. a recursion)
            data = wire.dumps_plain({"status": "error", **_error_dict(error)}, {}, self._keep)
        if len(data) > wire.MAX_MESSAGE_BYTES:
            self.observe("huge-output", f"a reply of {len(data)} bytes")
            data = wire.dumps_plain({"status": "error", "ename": "ValueError", "evalue":
                                     f"the result is {len(data)} bytes, over the grader's limit",
                                     "traceback": []}, {}, self._keep)
        wire.send_bytes(self.sock, data)

    def _keep(self, obj) -> int:
        handle = len(self.handles) + 1
        self.handles[handle] = obj
        return handle

    def op_run_cell(self, request: dict) -> dict:
        self.current = request["label"]
        before = dict(self.shell.user_ns)
        with Capture(self.shell, self.output_bytes) as captured:
            prefix = STUDENT_CELL if request["owned"] else COURSE_CELL
            result = self.shell.run_cell(request["source"], cell_name=f"{prefix}{request['label']}>")
        error = result.error_before_exec or result.error_in_exec
        self._observe_error(error)
        self._check_tampering()
        defined = {}
        for name, value in self.shell.user_ns.items():
            if name.startswith("_") or (name in before and before[name] is value):
                continue
            defined[name] = "callable" if callable(value) and not isinstance(value, type(os)) else "value"
        if captured.truncated:
            self.observe("huge-output", f"the cell's outputs exceed {self.output_bytes} bytes and were cut")
        return {"status": "error" if error else "ok", "outputs": captured.outputs(), "defined": defined}

    def op_call(self, request: dict) -> dict:
        self.current = request["name"]
        function = self.shell.user_ns.get(request["name"])
        if function is None:
            return {"status": "error", "ename": "NameError", "traceback": [],
                    "evalue": f"name {request['name']!r} is not defined in your notebook"}
        args, kwargs = _StudentUnpickler(request["payload"], self).load()
        # a result that *is* one of the arguments goes back as a reference to the caller's object
        self.known_ids = {id(obj): index for index, obj in enumerate(flatten((args, kwargs)))}
        with Capture(self.shell, self.output_bytes) as captured:
            try:
                result = function(*args, **kwargs)
                reply = {"status": "ok", "result": result}
            except BaseException as error:  # SystemExit and KeyboardInterrupt included
                self._observe_error(error)
                reply = {"status": "error", **_error_dict(error)}
        self._check_tampering()
        if captured.truncated:
            self.observe("huge-output", f"output of a call exceeds {self.output_bytes} bytes and was cut")
        # the arguments' state after the call, by value: in-place changes go back to the caller
        reply["args_after"] = wire.dumps_plain((list(args), dict(kwargs)), {}, self._keep)
        reply["stdout"], reply["stderr"] = captured.stdout.getvalue(), captured.stderr.getvalue()
        return reply

    def op_get(self, request: dict) -> dict:
        name = request["name"]
        if name not in self.shell.user_ns:
            return {"status": "error", "ename": "NameError", "evalue": f"name {name!r} is not defined", "traceback": []}
        return {"status": "ok", "result": self.shell.user_ns[name]}

    def op_report(self, request: dict) -> dict:
        self._check_tampering()
        return {"status": "ok", "observations": [list(o) for o in self.observations]}


class _StudentUnpickler(pickle.Unpickler):
    """Loads the trusted side's arguments, resolving references to this process's objects."""

    def __init__(self, data: bytes, process: StudentProcess):
        super().__init__(io.BytesIO(data))
        self.process = process

    def persistent_load(self, pid):
        if pid[0] == "global":
            return self.process.shell.user_ns[pid[1]]
        if pid[0] == "remote":
            return self.process.handles[pid[1]]
        raise pickle.UnpicklingError(f"unknown reference {pid!r}")


def _error_dict(error: BaseException) -> dict:
    frames = error.__traceback__
    while frames is not None and frames.tb_frame.f_code.co_filename == __file__:  # the grader's own frames
        frames = frames.tb_next
    lines = traceback.format_exception(type(error), error, frames)
    return {"ename": type(error).__name__, "evalue": _safe_str(error), "traceback": lines[-30:]}


def _safe_str(value) -> str:
    try:
        return str(value)[:2000]
    except BaseException:
        return "(the error's message could not be printed)"


def _called_from_cell() -> bool:
    """Is the student's own code (a cell of theirs, or a function it defined) on the stack?"""
    frame = sys._getframe(1)
    for _ in range(12):
        if frame is None:
            return False
        if frame.f_code.co_filename.startswith(STUDENT_CELL):
            return True
        frame = frame.f_back
    return False


# --------------------------------------------------------------------------- IPython


def _make_shell():
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    class CapturingShell(InteractiveShell):
        """An IPython shell whose tracebacks become nbformat error outputs."""

        errors: list = []

        def _showtraceback(self, etype, evalue, stb):
            self.errors.append({"output_type": "error", "ename": getattr(etype, "__name__", str(etype)),
                                "evalue": _safe_str(evalue), "traceback": [str(line) for line in stb][-30:]})

    config = Config()
    config.HistoryManager.enabled = False
    config.InteractiveShell.colors = "nocolor"
    shell = CapturingShell.instance(config=config)
    # IPython names each cell's code object after this, which _called_from_cell looks for
    shell.compile.get_code_name = lambda raw_code, transformed_code, number: shell._cell_name
    original_run_cell = shell.run_cell

    def run_cell(source, cell_name):
        shell._cell_name = cell_name
        return original_run_cell(source, store_history=False)

    shell.run_cell = run_cell
    return shell


class Capture:
    """Captures a cell's stdout, stderr, displays and errors, up to a size limit."""

    def __init__(self, shell, limit: int):
        self.shell, self.limit = shell, limit
        self.stdout, self.stderr = CappedText(limit), CappedText(limit)

    def __enter__(self):
        from IPython.utils.capture import capture_output

        self.shell.errors = []
        self.saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = self.stdout, self.stderr
        self.displays = capture_output(stdout=False, stderr=False, display=True)
        self.captured = self.displays.__enter__()
        return self

    def __exit__(self, *exc):
        self.displays.__exit__(*exc)
        sys.stdout, sys.stderr = self.saved
        return False

    @property
    def truncated(self) -> bool:
        return self.stdout.truncated or self.stderr.truncated or self._display_bytes() > self.limit

    def _display_bytes(self) -> int:
        return sum(len(str(v)) for out in self.captured.outputs for v in out.data.values())

    def outputs(self) -> list[dict]:
        outputs = []
        for name, stream in (("stdout", self.stdout), ("stderr", self.stderr)):
            if stream.getvalue():
                outputs.append({"output_type": "stream", "name": name, "text": stream.getvalue()})
        budget = self.limit
        for out in self.captured.outputs:
            data = {str(k): v if isinstance(v, str) else str(v) for k, v in out.data.items()}
            size = sum(len(v) for v in data.values())
            if size > budget:
                outputs.append({"output_type": "stream", "name": "stdout",
                                "text": f"[an output of {size} characters was removed: over the grader's limit]\n"})
                continue
            budget -= size
            outputs.append({"output_type": "display_data", "data": data, "metadata": {}})
        return outputs + list(self.shell.errors)


class CappedText(io.TextIOBase):
    """A text stream that keeps the first ``limit`` characters and counts the rest."""

    def __init__(self, limit: int):
        self.limit, self.parts, self.size, self.truncated = limit, [], 0, False

    def writable(self) -> bool:
        return True

    def write(self, text) -> int:
        text = text if isinstance(text, str) else str(text)
        room = self.limit - self.size
        if room > 0:
            self.parts.append(text[:room])
        if len(text) > max(room, 0):
            self.truncated = True
        self.size += len(text)
        return len(text)

    def getvalue(self) -> str:
        text = "".join(self.parts)
        return text + (f"\n[{self.size - len(text)} more characters were cut]\n" if self.truncated else "")


# --------------------------------------------------------------------------- tampering, observed


WATCHED_MODULES = ("builtins", "math", "numpy", "numpy.testing", "numpy.linalg", "torch", "torch.testing",
                   "torch.nn.functional", "dlvision.testing")
WATCHED_CLASSES = (("torch", "Tensor"),)


class LibraryWatch:
    """Remembers the functions of the watched modules, and says which were replaced."""

    def __init__(self):
        self.snapshot = {}
        for name in WATCHED_MODULES:
            module = sys.modules.get(name)
            if module is not None:
                self.snapshot[name] = dict(vars(module))
        for module_name, class_name in WATCHED_CLASSES:
            module = sys.modules.get(module_name)
            if module is not None:
                self.snapshot[f"{module_name}.{class_name}"] = dict(vars(getattr(module, class_name)))

    def changes(self) -> list[str]:
        found = []
        for name, before in self.snapshot.items():
            now = self._namespace(name)
            if now is None:
                continue
            for attribute, value in before.items():
                if attribute.startswith("__") and attribute not in ("__eq__", "__ne__", "__bool__", "__import__"):
                    continue
                if now.get(attribute, value) is not value:
                    found.append(f"{name}.{attribute} was replaced")
        return found

    @staticmethod
    def _namespace(name: str):
        if name in sys.modules:
            return vars(sys.modules[name])
        module_name, _, class_name = name.rpartition(".")
        module = sys.modules.get(module_name)
        return dict(vars(getattr(module, class_name))) if module is not None else None


def _hook_state(shell) -> dict:
    return {
        "input transformers": list(shell.input_transformers_cleanup) + list(shell.input_transformers_post),
        "AST transformers": list(shell.ast_transformers),
        "custom exception handlers": list(shell.custom_exceptions),
        "sys.excepthook": [sys.excepthook],
        "tracer": [sys.gettrace(), sys.getprofile()],
    }


def _hook_changes(shell, before: dict) -> list[str]:
    now = _hook_state(shell)
    return [f"changes IPython's {name}" for name, items in now.items()
            if len(items) != len(before[name]) or any(a is not b for a, b in zip(items, before[name], strict=True))]


class _RecordingEnviron(dict):
    """``os.environ`` for the student's process: reads from cells are recorded."""

    def __init__(self, environ, record):
        super().__init__(environ)
        self._record = record

    def __getitem__(self, key):
        self._record(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self._record(key)
        return super().get(key, default)

    def __contains__(self, key):
        self._record(key)
        return super().__contains__(key)


if __name__ == "__main__":
    serve(int(sys.argv[1]), [m for m in sys.argv[2].split(",") if m], sys.argv[3].split(os.pathsep))
