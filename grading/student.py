"""What runs inside the sandbox: a fork server, and the student's process it forks.

:mod:`grading.sandbox` starts ``python grading/student.py`` as PID 1 of the sandbox's PID
namespace. It imports the heavy modules and builds an IPython shell once (about two seconds a
notebook saved), makes itself non-dumpable (no process of the sandbox can read its memory or take
its file descriptors), and serves ``fork`` requests (JSON) on the control socket: each forks one
student process, whose end of a fresh socket pair goes to the grader (``SCM_RIGHTS``). While the
student runs, the server watches the memory of every process and of the tmpfs folders together,
and kills it when asked or over the limit; then it kills every other process, wipes the writable
folders and reports how the student's process ended and whether the sandbox is clean (a sandbox
that is not clean is replaced by the grader).

The student's process installs a seccomp filter (no ptrace, no other process's memory or file
descriptors, no namespaces, mounts or System V IPC), runs the student's cells in the shell, and
answers ``run_cell``, ``call`` and ``report`` requests. Everything it sends goes through
:func:`grading.wire.encode`: data, or handles. What it observes (replaced library functions,
IPython hooks, files, network, processes, in-place changes to a test's arrays) goes to the
integrity report only. The shell and :class:`Capture` serve the grader's process too.
"""

from __future__ import annotations

import ctypes
import io
import os
import pickle
import platform
import resource
import signal
import socket
import stat
import struct
import sys
import threading
import time
import traceback
import zlib

WORK = "/scratch"  # the student's scratch folder inside the sandbox (a tmpfs)
WRITABLE = ("/scratch", "/tmp")
STUDENT_CELL, COURSE_CELL, TEST_CELL = "<student cell ", "<course cell ", "<test cell "  # code object names
CANNOT_VOUCH = "so the rule cannot vouch for it"

# --------------------------------------------------------------------------- the fork server (PID 1)


def main() -> None:
    control_fd, preload, readonly = int(sys.argv[1]), sys.argv[2], sys.argv[3].split(os.pathsep)
    sys.dont_write_bytecode = True
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, signal.SIG_DFL)  # PID 1 ignores signals it does not handle
    _prctl(4, 0)  # PR_SET_DUMPABLE 0: no /proc/<pid>/mem, ptrace or pidfd_getfd on this process
    for module in filter(None, preload.split(",")):
        try:
            __import__(module)
        except Exception as error:  # a missing optional module is not fatal
            print(f"grading.student: could not preload {module}: {error}", file=sys.stderr)
    shell = make_shell()
    trusted = tuple(filter(None, readonly)) + ("/usr/", COURSE_CELL, TEST_CELL, "<frozen ")
    from grading import wire

    control = socket.socket(fileno=control_fd)
    while True:
        try:
            request = wire.recv_json(control)
        except (wire.ChannelClosed, wire.Malformed):
            os._exit(0)
        if request.get("op") != "fork":
            continue
        ours, theirs = socket.socketpair()
        own_memory = _anonymous_bytes(os.getpid())
        if (pid := os.fork()) == 0:
            control.close()
            ours.close()
            try:
                _student_main(theirs, request["limits"], shell, trusted)
            except BaseException:
                traceback.print_exc()  # only visible with GRADING_DEBUG=1
                os._exit(70)
            os._exit(0)
        theirs.close()
        socket.send_fds(control, [b'{"pid": %d}' % pid], [ours.fileno()])
        ours.close()
        status = _wait_for(pid, control, request["limits"]["memory_bytes"], own_memory)
        clean = _kill_everything() and all(_wipe(folder, readonly) for folder in WRITABLE)
        wire.send_json(control, {"exit": status, "clean": clean})
        if not clean:
            os._exit(3)  # the grader starts a fresh sandbox


def _prctl(option: int, value: int, pointer=None) -> None:
    zero = ctypes.c_ulong(0)  # the kernel requires the unused arguments to be 0
    if ctypes.CDLL(None, use_errno=True).prctl(option, ctypes.c_ulong(value), zero if pointer is None else pointer,
                                               zero, zero) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def _wait_for(pid: int, control: socket.socket, memory_bytes: int, own_memory: int) -> str:
    """Wait until the student's process ends; kill it when the grader asks (any byte on the control
    socket, or its closing) or when the sandbox's processes and tmpfs folders use too much memory."""
    control.setblocking(False)
    checked = 0.0
    try:
        while True:
            while True:  # reap everything: as PID 1, orphans are ours
                try:
                    done, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    return "ended"
                if done == pid:
                    number = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
                    return (f"killed by signal {number} ({signal.Signals(number).name})" if number else
                            f"exited with status {os.WEXITSTATUS(status)}")
                if done == 0:
                    break
            try:
                if control.recv(1 << 16) is not None:
                    os.kill(pid, signal.SIGKILL)
            except BlockingIOError:
                pass
            if time.monotonic() - checked > 0.05:
                checked = time.monotonic()
                used = sum(max(0, _anonymous_bytes(int(p)) - own_memory) for p in os.listdir("/proc")
                           if p.isdigit() and p != "1")
                used += sum((s.f_blocks - s.f_bfree) * s.f_frsize for s in map(os.statvfs, WRITABLE))
                if used > memory_bytes:
                    os.kill(-1, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    return (f"killed: its processes and files used {used / 2**20:.0f} MB of memory, over the limit "
                            f"of {memory_bytes / 2**20:.0f} MB")
            time.sleep(0.005)
    finally:
        control.setblocking(True)


def _anonymous_bytes(pid: int) -> int:
    """Resident memory of a process that is not backed by a file (nor shared memory)."""
    try:
        with open(f"/proc/{pid}/statm") as statm:
            fields = statm.read().split()
        return (int(fields[1]) - int(fields[2])) * resource.getpagesize()
    except (OSError, IndexError, ValueError):
        return 0


def _kill_everything() -> bool:
    """Kill every process of the sandbox but this one (PID 1); True when none is left."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0] != 0:
                pass
        except ChildProcessError:
            pass
        if not [p for p in os.listdir("/proc") if p.isdigit() and p != "1"]:
            return True
        time.sleep(0.01)
    return False


def _wipe(folder: str, mounted: list[str]) -> bool:
    """Delete everything in ``folder`` but the read-only mounts in it; True when that worked. Folders
    are made writable first (a student may have made them read-only); links are removed, never followed."""
    deadline = time.monotonic() + 30
    try:
        os.chmod(folder, 0o755)
        for entry in os.scandir(folder):
            if entry.path in mounted:
                continue
            if any(m.startswith(entry.path + "/") for m in mounted):
                if not _wipe(entry.path, mounted):
                    return False
                continue
            stack = [(entry.path, False)]
            while stack:
                if time.monotonic() > deadline:
                    return False
                path, emptied = stack.pop()
                if emptied:
                    os.rmdir(path)
                elif stat.S_ISDIR(os.lstat(path).st_mode):
                    os.chmod(path, 0o700)
                    stack += [(path, True)] + [(child.path, False) for child in os.scandir(path)]
                else:
                    os.unlink(path)
        return all(e.path in mounted or any(m.startswith(e.path + "/") for m in mounted) for e in os.scandir(folder))
    except OSError:
        return False


# --------------------------------------------------------------------------- the student's process

# System calls the student's process may not make, by architecture: tracing and reading other
# processes, taking their file descriptors, namespaces and mounts, System V IPC and POSIX
# message queues (which would outlive the process), io_uring, BPF, perf events, key rings.
_DENIED = {
    "x86_64": (0xC000003E, [101, 310, 311, 438, 434, 312, 298, 321, 323, 272, 308, 165, 166, 155, 161, 250, 248, 249,
                            425, 426, 427, 440, 304, 303, 428, 429, 430, 431, 432, 433, 442, 29, 30, 31, 64, 65, 66,
                            68, 69, 70, 71, 220, 240, 135]),
    "aarch64": (0xC00000B7, [117, 270, 271, 438, 434, 272, 241, 280, 282, 97, 268, 40, 39, 41, 51, 219, 217, 218, 425,
                             426, 427, 440, 265, 264, 428, 429, 430, 431, 432, 433, 442, 194, 195, 196, 190, 191, 192,
                             193, 186, 187, 188, 189, 180, 92]),
}


def install_seccomp() -> bool:
    """Deny the :data:`_DENIED` system calls (EPERM) to this process and its children; False on an
    architecture without a table."""
    arch, numbers = _DENIED.get(platform.machine(), (None, None))
    if arch is None:
        return False
    eperm, allow = 0x00050000 | 1, 0x7FFF0000

    def op(code, k, jt=0, jf=0):
        return struct.pack("HBBI", code, jt, jf, k)

    program = [op(0x20, 4), op(0x15, arch, 1, 0), op(0x06, eperm), op(0x20, 0)]  # load arch, check, load nr
    if arch == 0xC000003E:
        program += [op(0x35, 0x40000000, 0, 1), op(0x06, eperm)]  # x32 system calls: denied
    for number in numbers:
        program += [op(0x15, number, 0, 1), op(0x06, eperm)]
    program.append(op(0x06, allow))
    buffer = ctypes.create_string_buffer(b"".join(program))

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    _prctl(38, 1)  # PR_SET_NO_NEW_PRIVS
    _prctl(22, 2, ctypes.byref(Program(len(program), ctypes.addressof(buffer))))  # PR_SET_SECCOMP, MODE_FILTER
    return True


def _student_main(sock: socket.socket, limits: dict, shell, trusted: tuple[str, ...]) -> None:
    for fd in map(int, os.listdir("/proc/self/fd")):  # only its own socket: nothing of the server's
        if fd > 2 and fd != sock.fileno():
            try:
                os.close(fd)
            except OSError:
                pass
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1) if os.environ.get("GRADING_DEBUG") else (0, 1, 2):  # raw writes go nowhere
        os.dup2(null, fd)
    os.close(null)
    with open("/proc/self/statm") as statm:  # memory, processes, file size: enforced by the kernel from here on
        memory = int(statm.read().split()[0]) * resource.getpagesize() + int(limits["memory_bytes"])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_NPROC, (limits["processes"], limits["processes"]))  # in this user namespace
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["disk_bytes"], limits["disk_bytes"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.chdir(WORK)
    sys.path.insert(0, WORK)  # as in Jupyter, the working folder is importable
    install_seccomp()
    StudentProcess(sock, limits, shell, trusted).serve()


AUDITED = {"open": "grader-files", "os.listdir": "grader-files", "os.scandir": "grader-files",
           "os.remove": "grader-files", "os.rename": "grader-files", "os.chdir": "grader-files",
           "sqlite3.connect": "grader-files", "socket.connect": "network", "socket.bind": "network",
           "socket.getaddrinfo": "network", "os.fork": "resource-abuse", "os.forkpty": "resource-abuse",
           "os.posix_spawn": "resource-abuse", "subprocess.Popen": "resource-abuse", "os.system": "resource-abuse",
           "os.exec": "resource-abuse", "sys.settrace": "monkeypatch", "sys.setprofile": "monkeypatch"}


class StudentProcess:
    """Runs the student's cells and answers requests from the trusted grader."""

    def __init__(self, sock: socket.socket, limits: dict, shell, trusted: tuple[str, ...]):
        self.sock, self.shell, self.trusted = sock, shell, trusted
        self.budget = int(limits["output_bytes"])  # output bytes left for the whole notebook
        self.handles: dict[int, object] = {}
        self.observations: list[tuple[str, str, str]] = []  # (vector, cell, detail)
        self.current = ""  # the cell or call being run, for observations
        self.watch: Watch | None = None
        self.library = LibraryWatch()
        self.readable = tuple({WORK, "/tmp", "/dev/", "/usr/", "/proc/self/", sys.prefix, sys.base_prefix,
                               *(p for p in sys.path if p.startswith("/"))})
        self.hooks_before = _hooks(shell)
        sys.addaudithook(self.audit)
        os.register_at_fork(after_in_child=self.sock.close)  # a child must not answer the grader in its place

    def observe(self, vector: str, detail: str) -> None:
        if all((v, d) != (vector, detail) for v, _, d in self.observations) and len(self.observations) < 200:
            self.observations.append((vector, self.current, detail))

    def is_student_code(self, code) -> bool:
        return not code.co_filename.startswith(self.trusted)

    def student_on_stack(self, frame, near: bool = False) -> bool:
        """Is the student's code a caller of ``frame``? ``near``: within 12 frames, not through an import
        (what the student's code itself does)."""
        count = 0
        while frame is not None and not (near and (count == 12 or frame.f_code.co_filename.startswith(
                "<frozen importlib"))):
            if self.is_student_code(frame.f_code):
                return True
            frame, count = frame.f_back, count + 1
        return False

    def audit(self, event: str, args) -> None:
        vector = AUDITED.get(event)
        if vector is None or not self.student_on_stack(sys._getframe(1), near=True):
            return
        if event == "open":
            if isinstance(args[0], (str, bytes)) and not os.fsdecode(args[0]).startswith(self.readable):
                self.observe(vector, f"opens {os.fsdecode(args[0])!r}")
        elif vector == "monkeypatch":  # a tracer or profiler would also switch off the watch of forbidden operations
            self.observe(vector, f"installs a tracer ({event})")
            if self.watch is not None:
                self.watch.hit(f"{event}, which switches off the grader's watch ({CANNOT_VOUCH})")
        elif vector == "resource-abuse":
            self.observe(vector, f"starts a process ({event})")
        elif vector == "network":
            self.observe(vector, f"{event} {args[:2] if event == 'socket.getaddrinfo' else args[1:]!r}")
        else:
            self.observe(vector, f"{event} {args[0]!r}")

    def check_tampering(self, error: BaseException | None = None) -> None:
        if isinstance(error, SystemExit):
            self.observe("process-exit", "raises SystemExit (sys.exit)")
        elif isinstance(error, MemoryError):
            self.observe("resource-abuse", "runs out of memory (the grader's limit)")
        elif isinstance(error, BlockingIOError | PermissionError) and "fork" in str(error).lower():
            self.observe("resource-abuse", "hits the limit on processes")
        for detail in self.library.changes():
            self.observe("monkeypatch", detail)
        now = _hooks(self.shell)
        for name, items in now.items():
            before = self.hooks_before[name]
            if len(items) != len(before) or any(a is not b for a, b in zip(items, before, strict=True)):
                self.observe("ipython-hooks", f"changes IPython's {name}")

    def serve(self) -> None:
        from grading import wire

        while True:
            try:
                request = _Unpickler(io.BytesIO(wire.recv_bytes(self.sock)), self).load()
                reply, mode = getattr(self, "op_" + request["op"])(request)
            except wire.ChannelClosed:
                return
            except BaseException as error:  # a request that cannot be loaded (a NameError, say)
                reply, mode = {"status": "error", **_error_dict(error)}, "auto"
            try:
                data = wire.encode(reply, self.keep, mode)
            except BaseException as error:  # a result that cannot be sent (too large, too deep, not data)
                data = wire.encode({"status": "error", **_error_dict(error), "outputs": reply.get("outputs", [])},
                                   self.keep)
            wire.send_bytes(self.sock, data)

    def keep(self, obj) -> int:
        self.handles[len(self.handles) + 1] = obj
        return len(self.handles)

    def op_run_cell(self, request: dict) -> tuple[dict, str]:
        from grading import wire

        self.current, before = request["label"], dict(self.shell.user_ns)
        with Capture(self.shell, self.budget) as captured:
            self.shell.code_name = f"{STUDENT_CELL if request['owned'] else COURSE_CELL}{request['label']}>"
            result = self.shell.run_cell(request["source"], store_history=False)
        self.budget -= captured.size
        error = result.error_before_exec or result.error_in_exec
        self.check_tampering(error)
        if captured.cut:
            self.observe("huge-output", f"the outputs are over the limit of {captured.limit} bytes and were cut")
        values = {}
        for name in request.get("exports", []):  # a plain value (a constant the exercise asks for) is sent as data
            try:
                wire.encode({"v": self.shell.user_ns[name]}, None)
                values[name] = self.shell.user_ns[name]
            except BaseException:
                pass
        defined = [n for n, v in self.shell.user_ns.items() if not n.startswith("_") and before.get(n, self) is not v]
        return {"status": "error" if error else "ok", "outputs": captured.outputs(), "defined": defined,
                "values": values}, "auto"

    def op_call(self, request: dict) -> tuple[dict, str]:
        function, args, kwargs = request["payload"]
        self.current, trusted = request["label"], request.get("trusted")
        for detail in self.library.restore() if trusted else []:  # the grader's code sees the libraries as they were
            self.observe("monkeypatch", detail)
        self.watch = Watch(self, request.get("watch") or [])
        kept = {id(obj) for obj in self.handles.values()}  # the student's own objects may change in place
        before, error = {} if trusted else _fingerprints((args, kwargs), kept), None
        with Capture(self.shell, self.budget) as captured, self.watch:
            try:
                reply = {"status": "ok", "result": function(*args, **kwargs)}
            except BaseException as caught:  # SystemExit and KeyboardInterrupt included
                error, reply = caught, {"status": "error", **_error_dict(caught)}
        self.budget -= captured.size
        if before and before != _fingerprints((args, kwargs), kept):
            self.observe("inputs-changed", "changes the arrays a test gives it, in place (the test's own are not)")
        if self.watch.uses:
            reply["forbidden"] = self.watch.uses
        self.watch = None
        self.check_tampering(error)
        if captured.cut:
            self.observe("huge-output", f"the output of a call is over the limit of {captured.limit} bytes")
        return {**reply, "outputs": captured.outputs()}, request.get("mode", "auto")

    def op_report(self, request: dict) -> tuple[dict, str]:
        self.check_tampering()
        return {"status": "ok", "observations": [list(o) for o in self.observations]}, "auto"


class _Unpickler(pickle.Unpickler):
    """Loads the grader's requests, resolving its references to this process's objects."""

    def __init__(self, file, process: StudentProcess):
        super().__init__(file)
        self.process = process

    def persistent_load(self, pid):
        kind, key = pid
        if kind == "name" and key not in self.process.shell.user_ns:
            raise NameError(f"name {key!r} is not defined in your notebook")
        return self.process.shell.user_ns[key] if kind == "name" else self.process.handles[key]


class Watch:
    """Watches a call of an exercise that ``integrity.toml`` restricts, for the operations it forbids.

    ``rules``: ``{"exercise", "words", "modules"}`` each. A use is any library function (Python or
    C) whose name is a forbidden word, called while the student's code is on the stack, and any
    function of a forbidden module called directly from the student's code (a cell, a file it
    wrote, code it built). So it sees what a static rule cannot: a function redefined in a later
    cell, ``getattr`` chains, containers, module attributes, helper files, ``torch.ops.aten``.
    """

    def __init__(self, process: StudentProcess, rules: list[dict]):
        self.process, self.rules, self.uses = process, rules, {}
        self.words = {word: rule["exercise"] for rule in rules for word in rule["words"]}

    def __enter__(self):
        if self.rules:
            sys.setprofile(self.profile)
            threading.setprofile(self.profile)
        return self

    def __exit__(self, *exc):
        if self.rules:
            if threading._profile_hook != self.profile:  # noqa: SLF001 (a bound method: equal, not identical)
                self.hit(f"threading.setprofile, which switches off the grader's watch ({CANNOT_VOUCH})")
            sys.setprofile(None)
            threading.setprofile(None)
        return False

    def hit(self, what: str, exercises=None) -> None:
        for exercise in exercises or {rule["exercise"] for rule in self.rules}:
            found = self.uses.setdefault(exercise, [])
            if what not in found and len(found) < 20:
                found.append(what)

    def profile(self, frame, event, arg) -> None:
        if event == "c_call":
            name, module = getattr(arg, "__name__", ""), getattr(arg, "__module__", None) or ""
            direct = self.process.is_student_code(frame.f_code)
        elif event == "call" and not self.process.is_student_code(frame.f_code):
            name, module = frame.f_code.co_name, str(frame.f_globals.get("__name__", ""))
            direct = frame.f_back is not None and self.process.is_student_code(frame.f_back.f_code)
            frame = frame.f_back
        else:
            return
        if name in self.words and self.process.student_on_stack(frame):
            self.hit(f"{module}.{name}".lstrip("."), {self.words[name]})
        elif direct and module:
            for rule in self.rules:
                if any(module == m or module.startswith(m + ".") for m in rule["modules"]):
                    self.hit(f"{module}.{name}", {rule["exercise"]})


def _fingerprints(value, kept: set[int], depth: int = 3) -> dict[int, int]:
    """A checksum of each array and tensor in ``value`` (lists, tuples and dicts looked into)."""
    from grading.wire import tensor_bytes

    np, torch = sys.modules.get("numpy"), sys.modules.get("torch")
    found = {}

    def walk(item, level):
        kind = type(item)
        if id(item) in kept:
            return
        try:  # a layout no checksum can read costs the student nothing: that argument is not watched
            if np is not None and kind is np.ndarray and item.dtype.kind in "biufc":
                found[id(item)] = zlib.crc32(np.ascontiguousarray(item).tobytes())
            elif torch is not None and kind is torch.Tensor and item.layout == torch.strided and not item.is_meta:
                found[id(item)] = zlib.crc32(tensor_bytes(item))
        except Exception:
            return
        if level and kind in (list, tuple, dict):
            for element in item.values() if kind is dict else item:
                walk(element, level - 1)

    walk(value, depth)
    return found


def _error_dict(error: BaseException) -> dict:
    frames = error.__traceback__
    while frames is not None and frames.tb_frame.f_code.co_filename == __file__:  # the grader's own frames
        frames = frames.tb_next
    try:
        lines = traceback.format_exception(type(error), error, frames)
    except BaseException:
        lines = []
    return {"ename": type(error).__name__, "evalue": _safe_str(error), "traceback": [str(x) for x in lines[-30:]]}


def _safe_str(value) -> str:
    try:
        return str(value)[:2000]
    except BaseException:
        return "(the message could not be printed)"


# --------------------------------------------------------------------------- the shell and its outputs

_SHELL = None


def make_shell():
    """The process's IPython shell (made once): tracebacks, displays and last values go to the
    :class:`Capture` in force, as nbformat outputs; code objects are named ``shell.code_name``."""
    global _SHELL
    if _SHELL is not None:
        return _SHELL
    from IPython.core.displayhook import DisplayHook
    from IPython.core.displaypub import DisplayPublisher
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    class LastValue(DisplayHook):
        """A cell's last expression becomes an ``execute_result`` (nbgrader reads partial credit there)."""

        def write_output_prompt(self):
            pass

        def write_format_data(self, format_dict, md_dict=None):
            if self.shell.capture is not None:
                self.shell.capture.add({"output_type": "execute_result", "execution_count": None,
                                        "data": format_dict, "metadata": md_dict or {}})

        def finish_displayhook(self):
            pass

    class Publisher(DisplayPublisher):
        def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kwargs):
            if self.shell.capture is not None:
                self.shell.capture.add({"output_type": "display_data", "data": data, "metadata": metadata or {}})

        def clear_output(self, wait=False):
            pass

    class Shell(InteractiveShell):
        displayhook_class, display_pub_class, capture, code_name = LastValue, Publisher, None, "<cell>"

        def _showtraceback(self, etype, evalue, stb):
            if self.capture is not None:
                self.capture.add({"output_type": "error", "ename": getattr(etype, "__name__", str(etype)),
                                  "evalue": _safe_str(evalue), "traceback": [str(line) for line in stb][-30:]})

    config = Config()
    config.HistoryManager.enabled = False
    config.InteractiveShell.colors = "nocolor"
    config.InteractiveShell.cache_size = 0
    _SHELL = Shell.instance(config=config)
    _SHELL.compile.get_code_name = lambda raw_code, transformed_code, number: _SHELL.code_name
    return _SHELL


class Capture:
    """The outputs of one cell or call, in order, as nbformat output dicts, within ``limit`` bytes.

    While it is in force it is ``sys.stdout`` and ``sys.stderr`` (each a :meth:`stream`), and the
    shell sends it displays, last values and errors. What is over the limit is dropped and counted,
    and one note says so; errors and some stderr (what grades are made of) are always kept.
    """

    def __init__(self, shell, limit: int):
        self.shell, self.limit, self.items, self.size, self.cut = shell, max(0, limit), [], 0, 0

    def __enter__(self):
        self.saved = sys.stdout, sys.stderr, self.shell.capture
        sys.stdout, sys.stderr, self.shell.capture = _Stream(self, "stdout"), _Stream(self, "stderr"), self
        return self

    def __exit__(self, *exc):
        sys.stdout, sys.stderr, self.shell.capture = self.saved
        return False

    def add(self, output: dict) -> None:
        size = _size(output)
        if output["output_type"] in ("error", "execute_result"):  # what grades are made of: always kept, short
            output.update({k: _shortened(output[k]) for k in ("evalue", "traceback", "data") if k in output})
        elif self.size + size > self.limit:
            self.cut += size
            return
        self.size += size
        self.items.append(output)

    def write(self, name: str, text: str) -> None:
        kept = text[:max(self.limit - self.size, 0)]
        if not kept and name == "stderr" and not any(o.get("name") == "stderr" for o in self.items):
            kept = text[:200]  # output on stderr costs a test its points: some of it always stays
        self.cut += len(text) - len(kept)
        self.size += len(kept)
        last = self.items[-1] if self.items else {}
        if kept and last.get("output_type") == "stream" and last["name"] == name:
            last["text"] += kept
        elif kept:
            self.items.append({"output_type": "stream", "name": name, "text": kept})

    def outputs(self) -> list[dict]:
        note = {"output_type": "stream", "name": "stdout",
                "text": f"\n[{self.cut} more characters of output were cut: over the grader's limit]\n"}
        return self.items + [note] * bool(self.cut)


class _Stream(io.TextIOBase):
    def __init__(self, capture: Capture, name: str):
        self.capture, self.name = capture, name

    def writable(self) -> bool:
        return True

    def write(self, text) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self.capture.write(self.name, text)
        return len(text)


def _size(output: dict) -> int:
    return sum(len(v) if isinstance(v, str) else _size(v) if isinstance(v, dict) else len(str(v))
               for v in output.values())


def _shortened(value, limit: int = 4000):
    """A string, list of strings or mime bundle, cut to about ``limit`` characters each."""
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + f"... [{len(value) - limit} characters cut]"
    if isinstance(value, list):
        return [_shortened(v, limit) for v in value[-30:]]
    if isinstance(value, dict):
        return {k: _shortened(v, limit) for k, v in value.items() if isinstance(v, str)}
    return value


# --------------------------------------------------------------------------- tampering, observed

WATCHED_MODULES = ("builtins", "copy", "operator", "math", "numpy", "numpy.testing", "numpy.linalg", "torch",
                   "torch.testing", "torch.func", "torch.nn.functional", "dlvision.testing")
WATCHED_CLASSES = (("torch", "Tensor"), ("torch.nn", "Module"), ("torch.nn", "Parameter"))


class LibraryWatch:
    """Remembers the functions of the watched modules and classes (as the fork server had them),
    says which were replaced, and puts them back before the grader's own code runs here."""

    def __init__(self):
        self.snapshot = {name: dict(vars(namespace)) for name, namespace in self.namespaces()}

    @staticmethod
    def namespaces():
        for name in WATCHED_MODULES:
            if name in sys.modules:
                yield name, sys.modules[name]
        for module_name, class_name in WATCHED_CLASSES:
            module = sys.modules.get(module_name)
            if module is not None and isinstance(vars(module).get(class_name), type):
                yield f"{module_name}.{class_name}", vars(module)[class_name]

    def replaced(self):
        """(name, namespace, attribute, the original, whether the new value merely wraps it), for each
        replaced function (torch wraps some of its own functions on first use)."""
        for name, namespace in self.namespaces():
            now = vars(namespace)
            for attribute, value in self.snapshot.get(name, {}).items():
                if attribute.startswith("__") and attribute not in ("__eq__", "__ne__", "__bool__", "__import__"):
                    continue
                if now.get(attribute, value) is not value:
                    yield name, namespace, attribute, value, getattr(now.get(attribute), "__wrapped__", None) is value

    def changes(self) -> list[str]:
        return [f"{name}.{attribute} was replaced" for name, _, attribute, _, wraps in self.replaced() if not wraps]

    def restore(self) -> list[str]:
        restored = []
        for name, namespace, attribute, value, wraps in list(self.replaced()):
            try:
                setattr(namespace, attribute, value)
                restored += [] if wraps else [f"{name}.{attribute} was replaced (put back before the grader's checks)"]
            except (AttributeError, TypeError):
                restored.append(f"{name}.{attribute} was replaced and could not be put back")
        return restored


def _hooks(shell) -> dict:
    return {"input transformers": list(shell.input_transformers_cleanup) + list(shell.input_transformers_post),
            "AST transformers": list(shell.ast_transformers), "custom exception handlers": list(shell.custom_exceptions),
            "sys.excepthook": [sys.excepthook]}


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
