"""The sandbox the student's code runs in: bubblewrap, an unprivileged user, limits.

One :class:`Sandbox` is a long-lived ``bwrap`` process whose PID 1 is the fork server of
:mod:`grading.student`; each notebook gets a fresh student process forked from it. What the
student's process can reach:

* **files**: the Python installation and the course library, read-only; ``/dev`` read-only (its
  device nodes work); two writable tmpfs folders, ``/scratch`` (its working folder) and ``/tmp``,
  wiped after each student (a sandbox that cannot be wiped clean is replaced). The course folder,
  with ``solutions/``, the gradebook and the other submissions, is not in its file system;
* **network**: none (its own network namespace, whose loopback is down);
* **processes**: its own PID namespace, where the fork server is PID 1 (immune to its signals) and
  not dumpable; a seccomp filter; no further user namespaces; ``RLIMIT_NPROC``; whatever is left
  is killed after each student;
* **memory, disk and time**: ``RLIMIT_AS``, the tmpfs sizes and ``RLIMIT_FSIZE``; the fork server
  kills the student when its processes and files together use more than ``memory_bytes``; the
  grader kills it past its time limits.

As root (CI, a container), bubblewrap would run student code as root: the grader then stages the
read-only folders in a private mount namespace and starts bubblewrap as an unprivileged user
(``setpriv``), one user id per worker.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from grading import wire

PRELOAD = ("numpy", "torch", "IPython", "cloudpickle", "dlvision", "dlvision.testing", "sklearn.datasets")
SANDBOX_UID = 60000  # + worker number, when the grader runs as root
GRADING_MOUNT = "/opt/grading"


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot create namespaces here."""


@dataclass(frozen=True)
class Limits:
    """What one student's process may use."""

    cell_seconds: float = 120.0  # one student cell, or one call from a test
    notebook_seconds: float = 600.0  # everything the student's code runs for one notebook
    memory_bytes: int = 3 * 2**30  # all its processes and files together, above the warm imports
    processes: int = 64  # processes and threads
    disk_bytes: int = 256 * 2**20  # each writable folder (/scratch, /tmp), and the largest file
    output_bytes: int = 2**20  # outputs kept for the whole notebook; the rest is cut and reported


def pinned_environment() -> dict[str, str]:
    """What course cells read and must read alike in the grader and in the sandbox: the dlvision
    profile (``quick`` unless the grader's environment says otherwise) and the GPUs (none unless
    ``CUDA_VISIBLE_DEVICES`` names some)."""
    return {"DLVISION_PROFILE": os.environ.get("DLVISION_PROFILE") or "quick",
            "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "")}


def _read_only_folders() -> list[str]:
    """Folders the student's Python needs: the interpreter, the venv, the course library."""
    folders = {sys.base_prefix, sys.prefix, *(p for p in sys.path if p.startswith("/") and os.path.isdir(p)
                                               and "site-packages" in p)}
    spec = importlib.util.find_spec("dlvision")
    if spec is not None and spec.submodule_search_locations:
        folders.add(str(Path(next(iter(spec.submodule_search_locations))).parent))
    ordered = sorted(folders)  # a folder inside another one is already there
    return [f for f in ordered if not any(f != o and f.startswith(o.rstrip("/") + "/") for o in ordered)]


class Sandbox:
    """A bubblewrap fork server; :meth:`spawn` gives one student process."""

    def __init__(self, limits: Limits = Limits(), worker: int = 0, preload: tuple[str, ...] = PRELOAD):
        self.limits, self.worker, self.preload = limits, worker, preload
        self.process: subprocess.Popen | None = None
        self.control: socket.socket | None = None
        self.stage: str | None = None  # as root: the staging folder (a mount point in a private namespace)

    def start(self) -> None:
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise SandboxUnavailable("bubblewrap (bwrap) is not installed: the grader runs student code only inside "
                                     "it. Install it (Debian/Ubuntu: `apt-get install bubblewrap`) on the machine that "
                                     "grades; students do not need it.")
        ours, theirs = socket.socketpair()
        debug = bool(os.environ.get("GRADING_DEBUG"))  # shows the sandbox's stderr (the student process's too)
        self.process = subprocess.Popen(self._command(bwrap, theirs.fileno()), pass_fds=(theirs.fileno(),),
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=None if debug else subprocess.PIPE, start_new_session=True)
        theirs.close()
        self.control = ours

    def _command(self, bwrap: str, control_fd: int) -> list[str]:
        root, size = os.geteuid() == 0, str(self.limits.disk_bytes)
        args = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
                "--as-pid-1", "--ro-bind", "/usr", "/usr"]
        for name in ("bin", "sbin", "lib", "lib32", "lib64"):
            path = Path("/") / name
            args += ["--symlink", os.readlink(path), str(path)] if path.is_symlink() else [
                "--ro-bind", str(path), str(path)] if path.is_dir() else []
        for name in ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime", "passwd", "group"):
            args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
        args += ["--size", size, "--tmpfs", "/tmp", "--size", size, "--tmpfs", "/scratch"]
        grading_dir = str(Path(__file__).resolve().parent)
        folders = [*_read_only_folders(), grading_dir]
        targets = [f"{GRADING_MOUNT}/grading" if f == grading_dir else f for f in folders]
        for index, (folder, target) in enumerate(zip(folders, targets, strict=True)):
            args += ["--ro-bind", f"$STAGE/{index}" if root else folder, target]  # a venv under /tmp: kept by the wipe
        args += ["--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev", "--remount-ro", "/", "--chdir", "/scratch",
                 "--clearenv"]
        environment = {"PATH": f"{sys.prefix}/bin:/usr/bin:/bin", "HOME": "/scratch", "LANG": "C.UTF-8",
                       "MPLBACKEND": "Agg", "MPLCONFIGDIR": "/scratch/.matplotlib", "OMP_NUM_THREADS": "1",
                       "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",  # the workers already use every core
                       **{k: v for k, v in os.environ.items() if k.startswith(("DLVISION_", "GRADING_DEBUG"))},
                       **pinned_environment()}
        for key, value in environment.items():
            args += ["--setenv", key, value]
        args += [os.path.join(sys.prefix, "bin", "python"), "-I", "-P", f"{GRADING_MOUNT}/grading/student.py",
                 str(control_fd), ",".join(self.preload), os.pathsep.join(targets)]
        if not root:
            return args
        # As root: stage the read-only folders where an unprivileged user can reach them (a venv under
        # /root, say), then start bubblewrap as that user.
        self.stage = tempfile.mkdtemp(prefix="grading-stage-")  # removed by close()
        script = ["set -e", f"STAGE={shlex.quote(self.stage)}", 'mount -t tmpfs -o mode=755 stage "$STAGE"']
        for index, folder in enumerate(folders):
            script += [f'mkdir "$STAGE/{index}"', f'mount --bind {shlex.quote(folder)} "$STAGE/{index}"']
        quoted = " ".join(f'"$STAGE"/{a.removeprefix("$STAGE/")}' if a.startswith("$STAGE/") else shlex.quote(a)
                          for a in args)
        uid = SANDBOX_UID + self.worker
        script.append(f"exec setpriv --reuid={uid} --regid={uid} --clear-groups --inh-caps=-all {quoted}")
        return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", "\n".join(script)]

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def close(self) -> None:
        if self.control is not None:
            self.control.close()
        if self.alive():
            self.process.kill()
            self.process.wait()
        if self.stage is not None:
            shutil.rmtree(self.stage, ignore_errors=True)
        self.process = self.control = self.stage = None

    def spawn(self) -> socket.socket:
        """A fresh student process: the socket to talk to it."""
        for attempt in range(2):
            if not self.alive():
                self.close()
                self.start()
            try:
                wire.send_json(self.control, {"op": "fork", "limits": asdict(self.limits)})
                message, fds, _, _ = socket.recv_fds(self.control, 1 << 10, 1)
                if len(fds) != 1 or not message.startswith(b'{"pid": '):
                    raise wire.ChannelClosed("the sandbox sent no socket")
                return socket.socket(fileno=fds[0])
            except (OSError, wire.ChannelClosed, wire.Malformed):
                if attempt:
                    raise SandboxUnavailable(self._failure()) from None
                self.close()
        raise AssertionError("unreachable")

    def kill(self) -> None:
        """Kill the current student process (the fork server then cleans up)."""
        try:
            self.control.send(b"k")
        except OSError:
            self.close()

    def wait_exit(self, timeout: float = 60.0) -> str:
        """How the current student process ended ("exited with status 0", "killed by signal 9 ..."); a
        sandbox that could not be cleaned after it is closed: the next student gets a new one."""
        try:
            reply = wire.recv_json(self.control, timeout)
            status, clean = str(reply.get("exit", "?")), reply.get("clean") is True
        except (wire.ChannelClosed, wire.ChannelTimeout, wire.Malformed, OSError):
            status, clean = "the sandbox stopped responding", False
        if not clean:
            self.close()
        return status

    def _failure(self) -> str:
        error = ""
        if self.process is not None and self.process.stderr is not None:
            try:
                self.process.wait(timeout=5)
                error = self.process.stderr.read().decode(errors="replace")[-2000:]
            except subprocess.TimeoutExpired:
                pass
        return f"the sandbox could not start a student process. bubblewrap said: {error.strip() or '(nothing)'}"
