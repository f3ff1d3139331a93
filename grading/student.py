"""What runs inside the sandbox: a fork server, and the student's process it forks.

``python grading/student.py`` is started by :mod:`grading.sandbox` as PID 1 of the sandbox's
PID namespace. It imports the heavy modules and builds an IPython shell once (the *warm*
part, about two seconds a notebook), makes itself non-dumpable (so no process of the
sandbox can read or write its memory or take its file descriptors), and serves ``fork``
requests (JSON) on the control socket: each forks one **student process**, whose end of a
fresh socket pair goes back to the grader (``SCM_RIGHTS``). While it runs, the server
watches its memory (every process of the sandbox and the tmpfs folders together) and
kills it when asked or over the limit; when it ends, the server kills every other
process of the namespace, wipes the writable folders, and reports how it ended and
whether the sandbox is clean. A sandbox that is not clean is restarted by the grader.

The student process installs a seccomp filter (no ptrace, no reading other processes'
memory, no taking their file descriptors, no namespaces, mounts or System V IPC), then
runs the student's cells in an IPython shell and answers ``run_cell``/``call``/
``report`` requests. Everything it sends back goes through :func:`grading.wire.encode`:
data, or handles. Its observations (replaced library functions, IPython hooks, file and
network access, environment probes) are for the integrity report only. The shell and
:class:`Capture` are used by the grader's own process too.
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
STUDENT_CELL = "<student cell "  # code objects of the student's cells are named "<student cell fit>"
COURSE_CELL = "<course cell "  # instructor cells (setup, data) that also run here
TEST_CELL = "<test cell "  # the grader's test cells (helpers defined there may be shipped here)

# --------------------------------------------------------------------------- fork server


def main() -> None:
    control_fd, preload, readonly = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    sys.dont_write_bytecode = True
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, signal.SIG_DFL)  # PID 1 ignores signals it does not handle
    _prctl(4, ctypes.c_ulong(0))  # PR_SET_DUMPABLE 0: no /proc/<pid>/mem, ptrace or pidfd_getfd on this process
    for module in filter(None, preload.split(",")):
        try:
            __import__(module)
        except Exception as error:  # a missing optional module is not fatal for the server
            print(f"grading.student: could not preload {module}: {error}", file=sys.stderr)
    shell = make_shell()
    trusted = tuple(filter(None, readonly.split(os.pathsep))) + ("/usr/", COURSE_CELL, TEST_CELL, "<frozen ")
    from grading import wire

    control = socket.socket(fileno=control_fd)
    while True:
        try:
            request = wire.recv_json(control)
        except (wire.ChannelClosed, wire.Malformed):
            os._exit(0)
        if request.get("op") != "fork":
            continue
        limits = request["limits"]
        ours, theirs = socket.socketpair()
        own_memory = _anonymous_bytes(os.getpid())
        pid = os.fork()
        if pid == 0:
            control.close()
            ours.close()
            try:
                _student_main(theirs, limits, shell, trusted)
            except BaseException:
                traceback.print_exc()  # only visible with GRADING_DEBUG=1
                os._exit(70)
            os._exit(0)
        theirs.close()
        socket.send_fds(control, [b'{"pid": %d}' % pid], [ours.fileno()])
        ours.close()
        status = _wait_for(pid, control, limits, own_memory)
        clean = _kill_everything() and all(_wipe(folder, readonly.split(os.pathsep)) for folder in WRITABLE)
        wire.send_json(control, {"exit": status, "clean": clean})
        if not clean:
            os._exit(3)  # the grader starts a fresh sandbox


def _prctl(option: int, value) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def _wait_for(pid: int, control: socket.socket, limits: dict, own_memory: int) -> str:
    """Wait until the student's process ends, killing it when the grader asks or when the
    sandbox's processes and tmpfs folders together use more memory than allowed."""
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
                    return _describe_status(status)
                if done == 0:
                    break
            try:
                data = control.recv(1 << 16)
            except BlockingIOError:
                data = None
            if data is not None:  # a kill request, or the grader went away
                os.kill(pid, signal.SIGKILL)
            if time.monotonic() - checked > 0.05:
                checked = time.monotonic()
                used = _sandbox_memory(own_memory)
                if used > limits["memory_bytes"]:
                    os.kill(-1, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    return (f"killed: its processes and files used {used / 2**20:.0f} MB of memory, over the "
                            f"limit of {limits['memory_bytes'] / 2**20:.0f} MB")
            time.sleep(0.005)
    finally:
        control.setblocking(True)


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        return f"killed by signal {number} ({signal.Signals(number).name})"
    return f"exited with status {os.WEXITSTATUS(status)}"


def _anonymous_bytes(pid: int) -> int:
    """Resident memory of a process that is not backed by a file (nor shared memory)."""
    try:
        with open(f"/proc/{pid}/statm") as statm:
            fields = statm.read().split()
        return (int(fields[1]) - int(fields[2])) * resource.getpagesize()
    except (OSError, IndexError, ValueError):
        return 0


def _sandbox_memory(own_memory: int) -> int:
    """Memory that the student's processes added to the server's, plus the tmpfs folders' contents."""
    total = 0
    for name in os.listdir("/proc"):
        if name.isdigit() and name != "1":
            total += max(0, _anonymous_bytes(int(name)) - own_memory)
    for folder in WRITABLE:
        info = os.statvfs(folder)
        total += (info.f_blocks - info.f_bfree) * info.f_frsize
    return total


def _kill_everything() -> bool:
    """Kill every process of the sandbox but this one (PID 1); True when none is left."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass
        while True:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
        if not [p for p in os.listdir("/proc") if p.isdigit() and p != "1"]:
            return True
        time.sleep(0.01)
    return False


def _wipe(folder: str, mounted: list[str]) -> bool:
    """Delete everything in ``folder`` but the read-only mounts in it; True when that worked.

    Folders are made writable before they are emptied (a student may have made them
    read-only), symbolic links are removed, never followed.
    """
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
                    stack.append((path, True))
                    stack.extend((child.path, False) for child in os.scandir(path))
                else:
                    os.unlink(path)
        left = {e.path for e in os.scandir(folder)}
        return all(p in mounted or any(m.startswith(p + "/") for m in mounted) for p in left)
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
    """Deny the :data:`_DENIED` system calls (EPERM) to this process and its children; False
    on an architecture without a table."""
    arch, numbers = _DENIED.get(platform.machine(), (None, None))
    if arch is None:
        return False
    eperm, allow = 0x00050000 | 1, 0x7FFF0000

    def op(code, k, jt=0, jf=0):
        return struct.pack("HBBI", code, jt, jf, k)

    program = [op(0x20, 4), op(0x15, arch, 1, 0), op(0x06, eperm), op(0x20, 0)]  # load arch, check, load nr
    if arch == 0xC000003E:
        program.append(op(0x35, 0x40000000, 0, 1))  # x32 system calls: denied
        program.append(op(0x06, eperm))
    for number in numbers:
        program += [op(0x15, number, 0, 1), op(0x06, eperm)]
    program.append(op(0x06, allow))
    code = b"".join(program)
    buffer = ctypes.create_string_buffer(code)

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = Program(len(program), ctypes.addressof(buffer))
    _prctl(38, ctypes.c_ulong(1))  # PR_SET_NO_NEW_PRIVS
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(22, ctypes.c_ulong(2), ctypes.byref(fprog), ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
        raise OSError(ctypes.get_errno(), "the seccomp filter was refused")  # PR_SET_SECCOMP, MODE_FILTER
    return True


def _student_main(sock: socket.socket, limits: dict, shell, trusted: tuple[str, ...]) -> None:
    keep = sock.fileno()
    for fd in map(int, os.listdir("/proc/self/fd")):  # only its own socket: nothing of the server's
        if fd > 2 and fd != keep:
            try:
                os.close(fd)
            except OSError:
                pass
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1) if os.environ.get("GRADING_DEBUG") else (0, 1, 2):  # raw writes go nowhere
        os.dup2(null, fd)
    os.close(null)
    _set_limits(limits)
    os.chdir(WORK)
    sys.path.insert(0, WORK)  # as in Jupyter, the working folder is importable
    install_seccomp()
    StudentProcess(sock, limits, shell, trusted).serve()


def _set_limits(limits: dict) -> None:
    """Memory, processes, file size: enforced by the kernel from here on."""
    with open("/proc/self/statm") as statm:
        mapped = int(statm.read().split()[0]) * resource.getpagesize()
    memory = mapped + int(limits["memory_bytes"])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    # RLIMIT_NPROC counts processes and threads of this user in the sandbox's user namespace
    resource.setrlimit(resource.RLIMIT_NPROC, (limits["processes"], limits["processes"]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["disk_bytes"], limits["disk_bytes"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


AUDITED = frozenset({
    "open", "socket.connect", "socket.bind", "socket.getaddrinfo", "os.fork", "os.forkpty", "os.posix_spawn",
    "subprocess.Popen", "os.system", "os.exec", "os.listdir", "os.scandir", "os.remove", "os.rename",
    "os.chdir", "sqlite3.connect", "sys.settrace", "sys.setprofile",
})


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
        self.hooks_before = _hook_state(shell)
        sys.addaudithook(self._audit)
        # a process the student's code forks must not answer the grader in its parent's place
        os.register_at_fork(after_in_child=self.sock.close)
        os.environ = _RecordingEnviron(os.environ, self._environ_read)  # noqa: B003 (reads are recorded)

    # ---- observations (for the integrity report only)

    def observe(self, vector: str, detail: str) -> None:
        if all((v, d) != (vector, detail) for v, _, d in self.observations) and len(self.observations) < 200:
            self.observations.append((vector, self.current, detail))

    def is_student_code(self, code) -> bool:
        return not code.co_filename.startswith(self.trusted)

    def student_on_stack(self, frame) -> bool:
        while frame is not None:
            if self.is_student_code(frame.f_code):
                return True
            frame = frame.f_back
        return False

    def caused_by_student(self, frame) -> bool:
        """Is the student's code a near caller (not through an import) of what ``frame`` runs?"""
        for _ in range(12):
            if frame is None or frame.f_code.co_filename.startswith("<frozen importlib"):
                return False
            if self.is_student_code(frame.f_code):
                return True
            frame = frame.f_back
        return False

    def _audit(self, event: str, args) -> None:
        if event not in AUDITED or not self.caused_by_student(sys._getframe(1)):
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
        else:  # a tracer or profiler: it would also switch off the grader's watch of forbidden operations
            self.observe("monkeypatch", f"installs a tracer ({event})")
            if self.watch is not None:
                self.watch.hit(f"{event}, which switches off the grader's watch ({_CANNOT_VOUCH})")

    def _environ_read(self, key) -> None:
        if self.caused_by_student(sys._getframe(1)):
            self.observe("grader-detection", f"reads the environment variable {key!r}")

    def _observe_error(self, error: BaseException | None) -> None:
        if isinstance(error, SystemExit):
            self.observe("process-exit", "raises SystemExit (sys.exit)")
        elif isinstance(error, MemoryError):
            self.observe("resource-abuse", "runs out of memory (the grader's limit)")
        elif isinstance(error, BlockingIOError | PermissionError) and "fork" in str(error).lower():
            self.observe("resource-abuse", "hits the limit on processes")

    def _check_tampering(self) -> None:
        for detail in self.library.changes():
            self.observe("monkeypatch", detail)
        for detail in _hook_changes(self.shell, self.hooks_before):
            self.observe("ipython-hooks", detail)

    # ---- requests

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
                data = wire.encode(reply, self._keep, mode)
            except BaseException as error:  # a result that cannot be sent (too large, too deep, not data)
                data = wire.encode({"status": "error", **_error_dict(error), "outputs": reply.get("outputs", [])},
                                   self._keep)
            wire.send_bytes(self.sock, data)

    def _keep(self, obj) -> int:
        number = len(self.handles) + 1
        self.handles[number] = obj
        return number

    def op_run_cell(self, request: dict) -> tuple[dict, str]:
        self.current = request["label"]
        before = dict(self.shell.user_ns)
        with Capture(self.shell, self.budget) as captured:
            self.shell.code_name = f"{STUDENT_CELL if request['owned'] else COURSE_CELL}{request['label']}>"
            result = self.shell.run_cell(request["source"], store_history=False)
        self.budget -= captured.size
        error = result.error_before_exec or result.error_in_exec
        self._observe_error(error)
        self._check_tampering()
        if captured.cut:
            self.observe("huge-output", f"the outputs are over the limit of {captured.limit} bytes and were cut")
        from grading import wire

        defined, values = [], {}
        for name, value in self.shell.user_ns.items():
            if not name.startswith("_") and not (name in before and before[name] is value):
                defined.append(name)
        for name in request.get("exports", []):
            if name in self.shell.user_ns:
                try:  # a plain value (a constant the exercise asks for) is sent as data
                    wire.encode({"v": self.shell.user_ns[name]}, None)
                    values[name] = self.shell.user_ns[name]
                except BaseException:
                    pass
        return {"status": "error" if error else "ok", "outputs": captured.outputs(), "defined": defined,
                "values": values}, "auto"

    def op_call(self, request: dict) -> tuple[dict, str]:
        function, args, kwargs = request["payload"]
        self.current = request["label"]
        if request.get("trusted"):
            for detail in self.library.restore():
                self.observe("monkeypatch", detail)
        self.watch = Watch(self, request.get("watch") or [])
        kept = {id(obj) for obj in self.handles.values()}  # the student's own objects may change in place
        before = {} if request.get("trusted") else _fingerprints((args, kwargs), kept)
        with Capture(self.shell, self.budget) as captured, self.watch:
            try:
                reply = {"status": "ok", "result": function(*args, **kwargs)}
            except BaseException as error:  # SystemExit and KeyboardInterrupt included
                self._observe_error(error)
                reply = {"status": "error", **_error_dict(error)}
        self.budget -= captured.size
        if before and before != _fingerprints((args, kwargs), kept):
            self.observe("inputs-changed", "changes the arrays a test gives it, in place (the test's own are not)")
        if self.watch.uses:
            reply["forbidden"] = self.watch.uses
        self.watch = None
        self._check_tampering()
        if captured.cut:
            self.observe("huge-output", f"the output of a call is over the limit of {captured.limit} bytes")
        reply["outputs"] = captured.outputs()
        return reply, request.get("mode", "auto")

    def op_report(self, request: dict) -> tuple[dict, str]:
        self._check_tampering()
        return {"status": "ok", "observations": [list(o) for o in self.observations]}, "auto"


class _Unpickler(pickle.Unpickler):
    """Loads the grader's requests, resolving its references to this process's objects."""

    def __init__(self, file, process: StudentProcess):
        super().__init__(file)
        self.process = process

    def persistent_load(self, pid):
        kind, key = pid
        if kind == "name":
            if key not in self.process.shell.user_ns:
                raise NameError(f"name {key!r} is not defined in your notebook")
            return self.process.shell.user_ns[key]
        return self.process.handles[key]


_CANNOT_VOUCH = "so the rule cannot vouch for it"


class Watch:
    """Watches a call of an exercise that ``integrity.toml`` restricts, for the operations it forbids.

    ``rules`` is a list of ``{"exercise", "words", "modules"}``. A use is any library function
    (Python or C) whose name is a forbidden word, called while the student's code is on the
    stack, and any function of a forbidden module called directly from the student's code
    (a cell, a file it wrote, code it built). It catches what a static rule cannot see: a
    function redefined in a later cell, names reached through ``getattr`` chains, containers
    or module attributes, helper files written and imported at run time, ``torch.ops.aten``.
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
                self.hit(f"threading.setprofile, which switches off the grader's watch ({_CANNOT_VOUCH})")
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
        elif event == "call":
            code = frame.f_code
            if self.process.is_student_code(code):
                return
            name, module = code.co_name, str(frame.f_globals.get("__name__", ""))
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
    """A checksum of each array and tensor in ``value`` (lists, tuples and dicts are looked into)."""
    np, torch = sys.modules.get("numpy"), sys.modules.get("torch")
    found = {}

    def walk(item, level):
        kind = type(item)
        if id(item) in kept:
            return
        if np is not None and kind is np.ndarray and item.dtype.kind in "biufc":
            found[id(item)] = zlib.crc32(np.ascontiguousarray(item).tobytes())
        elif torch is not None and kind is torch.Tensor and item.layout == torch.strided and not item.is_meta:
            found[id(item)] = zlib.crc32(item.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
        elif level and kind in (list, tuple):
            for element in item:
                walk(element, level - 1)
        elif level and kind is dict:
            for element in item.values():
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


def make_shell():
    """The process's IPython shell (made once): its tracebacks, displays and last values go to the
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
        displayhook_class = LastValue
        display_pub_class = Publisher
        capture = None
        code_name = "<cell>"

        def _showtraceback(self, etype, evalue, stb):
            if self.capture is not None:
                self.capture.add({"output_type": "error", "ename": getattr(etype, "__name__", str(etype)),
                                  "evalue": _safe_str(evalue), "traceback": [str(line) for line in stb][-30:]})

    config = Config()
    config.HistoryManager.enabled = False
    config.InteractiveShell.colors = "nocolor"
    config.InteractiveShell.cache_size = 0
    shell = Shell.instance(config=config)
    shell.compile.get_code_name = lambda raw_code, transformed_code, number: shell.code_name
    _SHELL = shell
    return shell


_SHELL = None


class Capture:
    """The outputs of one cell or call, in order, as nbformat output dicts, within ``limit`` bytes.

    stdout and stderr are replaced while it is in force; displays, last values and errors
    arrive through the shell (:func:`make_shell`). What is over the limit is dropped and
    counted, and one note says so.
    """

    def __init__(self, shell, limit: int):
        self.shell, self.limit, self.items, self.size, self.cut = shell, max(0, limit), [], 0, 0

    def __enter__(self):
        self.saved = sys.stdout, sys.stderr, self.shell.capture
        sys.stdout, sys.stderr = _Stream(self, "stdout"), _Stream(self, "stderr")
        self.shell.capture = self
        return self

    def __exit__(self, *exc):
        sys.stdout, sys.stderr, self.shell.capture = self.saved
        return False

    def add(self, output: dict) -> None:
        size = _size(output)
        if output["output_type"] in ("error", "execute_result"):  # what grades are made of: always kept, short
            for key in ("evalue", "traceback", "data"):
                if key in output:
                    output[key] = _shortened(output[key])
        elif self.size + size > self.limit:
            self.cut += size
            return
        self.size += size
        self.items.append(output)

    def write(self, name: str, text: str) -> None:
        room = self.limit - self.size
        kept = text[:max(room, 0)]
        if not kept and name == "stderr" and not any(o.get("name") == "stderr" for o in self.items):
            kept = text[:200]  # output on stderr costs a test its points: some of it always stays
        self.cut += len(text) - len(kept)
        self.size += len(kept)
        if not kept:
            return
        last = self.items[-1] if self.items else None
        if last is not None and last["output_type"] == "stream" and last["name"] == name:
            last["text"] += kept
        else:
            self.items.append({"output_type": "stream", "name": name, "text": kept})

    def outputs(self) -> list[dict]:
        note = [{"output_type": "stream", "name": "stdout",
                 "text": f"\n[{self.cut} more characters of output were cut: over the grader's limit]\n"}]
        return self.items + (note if self.cut else [])


def _shortened(value, limit: int = 4000):
    """A string, list of strings or mime bundle, cut to about ``limit`` characters each."""
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + f"... [{len(value) - limit} characters cut]"
    if isinstance(value, list):
        return [_shortened(v, limit) for v in value[-30:]]
    if isinstance(value, dict):
        return {k: _shortened(v, limit) for k, v in value.items() if isinstance(v, str)}
    return value


def _size(output: dict) -> int:
    return sum(len(v) if isinstance(v, str) else _size(v) if isinstance(v, dict) else len(str(v))
               for v in output.values())


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


# --------------------------------------------------------------------------- tampering, observed

WATCHED_MODULES = ("builtins", "copy", "operator", "math", "numpy", "numpy.testing", "numpy.linalg", "torch",
                   "torch.testing", "torch.func", "torch.nn.functional", "dlvision.testing")
WATCHED_CLASSES = (("torch", "Tensor"), ("torch.nn", "Module"), ("torch.nn", "Parameter"))


class LibraryWatch:
    """Remembers the functions of the watched modules and classes (as the fork server had them),
    says which were replaced, and puts them back before the grader's own code runs here."""

    def __init__(self):
        self.snapshot = {}
        for name, namespace in self._namespaces():
            self.snapshot[name] = dict(vars(namespace))

    @staticmethod
    def _namespaces():
        for name in WATCHED_MODULES:
            if name in sys.modules:
                yield name, sys.modules[name]
        for module_name, class_name in WATCHED_CLASSES:
            module = sys.modules.get(module_name)
            if module is not None and isinstance(vars(module).get(class_name), type):
                yield f"{module_name}.{class_name}", vars(module)[class_name]

    def _replaced(self):
        for name, namespace in self._namespaces():
            now = vars(namespace)
            for attribute, value in self.snapshot.get(name, {}).items():
                if attribute.startswith("__") and attribute not in ("__eq__", "__ne__", "__bool__", "__import__"):
                    continue
                if now.get(attribute, value) is not value:
                    yield name, namespace, attribute, value

    @staticmethod
    def _wraps(namespace, attribute, value) -> bool:
        """A wrapper around the original (torch wraps some of its own functions on first use)."""
        return getattr(vars(namespace).get(attribute), "__wrapped__", None) is value

    def changes(self) -> list[str]:
        return [f"{name}.{attribute} was replaced" for name, namespace, attribute, value in self._replaced()
                if not self._wraps(namespace, attribute, value)]

    def restore(self) -> list[str]:
        restored = []
        for name, namespace, attribute, value in list(self._replaced()):
            wrapper = self._wraps(namespace, attribute, value)
            try:
                setattr(namespace, attribute, value)
                if not wrapper:
                    restored.append(f"{name}.{attribute} was replaced (put back before the grader's checks)")
            except (AttributeError, TypeError):
                restored.append(f"{name}.{attribute} was replaced and could not be put back")
        return restored


def _hook_state(shell) -> dict:
    return {
        "input transformers": list(shell.input_transformers_cleanup) + list(shell.input_transformers_post),
        "AST transformers": list(shell.ast_transformers),
        "custom exception handlers": list(shell.custom_exceptions),
        "sys.excepthook": [sys.excepthook],
    }


def _hook_changes(shell, before: dict) -> list[str]:
    now = _hook_state(shell)
    return [f"changes IPython's {name}" for name, items in now.items()
            if len(items) != len(before[name]) or any(a is not b for a, b in zip(items, before[name], strict=True))]


class _RecordingEnviron(dict):
    """``os.environ`` for the student's process: reads from the student's code are recorded."""

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
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
