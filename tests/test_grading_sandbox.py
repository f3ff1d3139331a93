"""The sandbox and the protocol, without nbgrader: what the student's process can and cannot do,
and what comes back from it (data, or handles to objects that stay there)."""

from __future__ import annotations

import collections
import functools
import socket
import threading
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import dlvision.testing as tools
from grading import wire
from grading.remote import ForbiddenOperation, Proxy, Remote, Runner, Session, StudentProcessGone, install_runner
from grading.sandbox import Limits, Sandbox, _read_only_folders

REPO_SECRET_PATHS = ["solutions", "gradebook.db", "submitted", "nbgrader_config.py"]


@pytest.fixture(scope="module")
def sandbox():
    box = Sandbox(Limits(cell_seconds=20, notebook_seconds=120, memory_bytes=2**30))
    yield box
    box.close()


def run(session: Session, source: str, exports=()) -> dict:
    return session.run_cell("fit", source, owned=True, exports=list(exports))


def stdout(reply: dict) -> str:
    return "".join(o.get("text", "") for o in reply["outputs"] if o["output_type"] == "stream")


def mount_points_in(folder: str) -> list[str]:
    """What a wiped ``folder`` of the sandbox still shows: the first name, inside it, of each
    read-only mount that lies under it (a clone under /tmp puts its venv there), and nothing else."""
    return sorted({Path(f).relative_to(folder).parts[0] for f in _read_only_folders() if Path(f).is_relative_to(folder)})


@pytest.fixture
def session(sandbox):
    student = Session(sandbox, sandbox.limits)
    install_runner(Runner(student))
    yield student
    install_runner(None)
    student.close()


# --------------------------------------------------------------------------- what it can reach


def test_a_connection_to_a_server_on_loopback_fails(session):
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    reply = run(session, f"""
import socket
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=3)
    print("CONNECTED")
except OSError as error:
    print("refused:", error)
""")
    assert "refused:" in stdout(reply) and "CONNECTED" not in stdout(reply)
    assert not accepted
    server.close()


def test_the_course_folder_is_not_there(session):
    from harness import REPO

    paths = [str(REPO / p) for p in REPO_SECRET_PATHS]
    reply = run(session, f"import os\nprint([os.path.exists(p) for p in {paths!r}], sorted(os.listdir({str(REPO)!r})))")
    # only the Python environment and the course library are mounted (read-only) from the repository
    assert stdout(reply).strip() == f"{[False] * len(paths)} {sorted(['.venv', 'lib'])}"


def test_writes_go_only_to_the_scratch_folders(session):
    import sys

    reply = run(session, f"""
import os
results = []
for path in ["/scratch/mine.txt", "/tmp/mine.txt", "{sys.prefix}/written.txt", "/usr/written.txt", "/written.txt",
             "/dev/written.txt", "/dev/shm/written.txt"]:
    try:
        with open(path, "w") as f:
            f.write("x")
        results.append("ok")
    except OSError:
        results.append("denied")
with open("/dev/null", "w") as f:
    f.write("the device nodes still work")
print(results)
""")
    assert stdout(reply).strip() == "['ok', 'ok', 'denied', 'denied', 'denied', 'denied', 'denied']"


def test_memory_and_processes_are_capped(session):
    reply = run(session, """
import os
try:
    block = bytearray(4 * 2**30)
    print("allocated")
except MemoryError:
    print("memory refused")
started = 0
try:
    for _ in range(500):
        if os.fork() == 0:
            import time
            time.sleep(30)
            os._exit(0)
        started += 1
except OSError:
    pass
print("forks", started)
""")
    lines = stdout(reply).split()
    assert "refused" in lines and int(lines[-1]) < 100, stdout(reply)


def test_memory_in_files_counts_too(sandbox):
    """The tmpfs folders count in the memory limit: filling them ends the process."""
    small = Sandbox(Limits(cell_seconds=20, notebook_seconds=60, memory_bytes=200 * 2**20))
    try:
        student = Session(small, small.limits)
        with pytest.raises(StudentProcessGone, match="memory"):
            run(student, """
import time
for i in range(20):
    with open(f"/tmp/block{i}", "wb") as f:
        f.write(b"x" * 2**20 * 60)
time.sleep(5)
""")
        assert "resource-abuse" in [f.vector for f in student.findings]
        fresh = Session(small, small.limits)
        assert stdout(run(fresh, "import os\nprint(sorted(os.listdir('/tmp')))")).strip() == str(mount_points_in("/tmp"))
        fresh.close()
    finally:
        small.close()


def test_a_call_past_its_time_limit_is_stopped_with_the_reason(sandbox):
    session = Session(sandbox, Limits(cell_seconds=2, notebook_seconds=60))
    run(session, "def fit():\n    while True:\n        pass\n\ndef ok():\n    return 1")
    with pytest.raises(StudentProcessGone, match="stopped in fit after 2 s"):
        Proxy(session, "fit", "fit")()
    with pytest.raises(StudentProcessGone):
        Proxy(session, "ok", "fit")()
    assert [f.vector for f in session.findings] == ["resource-abuse"]
    session.close()
    # the next student gets a fresh process from the same sandbox
    fresh = Session(sandbox, sandbox.limits)
    run(fresh, "def ok():\n    return 1")
    assert Proxy(fresh, "ok", "fit")() == 1
    fresh.close()


# --------------------------------------------------------------------------- what comes back


def test_results_come_back_as_plain_data(session):
    run(session, """
import collections, numpy as np, torch
Point = collections.namedtuple("Point", "x y")
def plain(x):
    return (x * 2, {"n": 3, "t": torch.ones(2, dtype=torch.float64)}, [np.float32(1.5), None, b"raw", 2 + 1j],
            {1, 2}, float("nan"))
def torch_things():
    layer = torch.nn.Linear(2, 3)
    return (layer.state_dict(), layer.weight, torch.Size([2, 3]), torch.float16, torch.device("cpu"),
            Point(1, 2), torch.max(torch.tensor([[1.0, 5.0]]), dim=1), torch.zeros(2, dtype=torch.bfloat16))
def generator():
    return np.random.default_rng(3)
""")
    doubled, info, items, numbers, nan = Proxy(session, "plain", "fit")(np.arange(3))
    assert type(doubled) is np.ndarray and doubled.tolist() == [0, 2, 4]
    assert type(info["t"]) is torch.Tensor and info["t"].dtype == torch.float64
    assert type(items[0]) is np.float32 and items[1:] == [None, b"raw", 2 + 1j]
    assert numbers == {1, 2} and nan != nan
    state, weight, size, dtype, device, point, maximum, half = Proxy(session, "torch_things", "fit")()
    assert type(state) is dict and list(state) == ["weight", "bias"]
    assert type(weight) is torch.Tensor and weight.requires_grad and weight.shape == (3, 2)
    assert (size, dtype, device, point) == ((2, 3), "torch.float16", "cpu", (1, 2))
    assert type(point) is tuple and type(maximum) is tuple and maximum[1].tolist() == [1]
    assert half.dtype == torch.bfloat16
    generator = Proxy(session, "generator", "fit")()
    assert generator.random() == np.random.default_rng(3).random()


def test_nothing_is_copied_back_into_the_tests_objects(session):
    run(session, """
def in_place(a, params, t):
    a += 1
    params["W"] *= 2
    params["new"] = 0
    t.add_(1)
    return a
""")
    a, params, t = np.zeros(2), {"W": np.ones(2)}, torch.zeros(3)
    result = Proxy(session, "in_place", "fit")(a, params, t)
    assert result.tolist() == [1.0, 1.0] and result is not a
    assert a.tolist() == [0.0, 0.0] and params == {"W": params["W"]} and params["W"].tolist() == [1.0, 1.0]
    assert t.tolist() == [0.0, 0.0, 0.0]


def test_other_objects_come_back_as_handles_that_stay_there(session):
    run(session, """
import numpy as np, torch
class Always(float):
    def __eq__(self, other):
        return True
class Net(torch.nn.Module):
    def __init__(self, width):
        super().__init__()
        self.fc = torch.nn.Linear(3, width)
        self.layers = torch.nn.ModuleList([torch.nn.ReLU(), torch.nn.Tanh()])
    def forward(self, x):
        return self.fc(x).relu()
def rigged():
    return Always(1.0), np.zeros(2).view(type("Sub", (np.ndarray,), {"__eq__": lambda s, o: True}))
def count(model):
    return sum(p.numel() for p in model.parameters())
def steps():
    yield 1
    yield 2
""", exports=["Net"])
    for value in Proxy(session, "rigged", "fit")():
        assert isinstance(value, Remote)
        assert value == value and not (value == 1.0) and value != np.zeros(2)
    net = Proxy(session, "Net", "fit")(4)
    assert isinstance(net, Remote) and net != Proxy(session, "Net", "fit")(4)
    assert net.training is True and isinstance(net.fc, Remote) and net.fc.weight.shape == (4, 3)
    assert net(torch.ones(2, 3)).shape == (2, 4)
    assert net.eval() is not net and net.training is False  # eval() returns a handle to the same module
    assert [tuple(p.shape) for p in net.parameters()] == [(4, 3), (4,)]
    assert len(net.layers) == 2 and "ReLU" in repr(net.layers[0])
    assert Proxy(session, "count", "fit")(net) == 16  # passed back: the student's own object
    assert list(Proxy(session, "steps", "fit")()) == [1, 2]
    with pytest.raises(AttributeError):
        net.weight = None  # noqa: B010  (handles are read-only here)


def test_the_tools_run_beside_the_students_objects_as_the_graders_code(session):
    run(session, """
import torch, dlvision.testing
def _fake(module):
    return {"parameters": {}, "training": True}
dlvision.testing._module_facts = _fake   # the student's own copy of the tools, changed
torch.nn.Module.named_parameters = lambda self, *a, **k: iter([])  # and torch's, too
def make():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
def freeze(model):
    for p in model[0].parameters():
        p.requires_grad_(False)
""")
    make, freeze = Proxy(session, "make", "fit"), Proxy(session, "freeze", "fit")
    facts = tools.module_facts(make())
    assert sorted(facts["parameters"]) == ["0.bias", "0.weight", "1.bias", "1.weight"]
    torch.manual_seed(0)
    trusted = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    copy = tools.student_copy(trusted)
    assert freeze(copy) is None
    assert tools.module_facts(copy)["requires_grad"] == {"0.weight": False, "0.bias": False, "1.weight": True,
                                                        "1.bias": True}
    assert trusted[0].weight.requires_grad  # the trusted original is untouched
    assert tools.fetch(tools.student_copy(np.arange(3))).tolist() == [0, 1, 2]
    with pytest.raises(TypeError, match="module_facts"):
        tools.fetch(copy)
    # without a handle among its arguments, beside runs here; with one, over there; a proxy that a
    # test's own lambda captures is the student's function there
    assert tools.beside(lambda a: a + 1, 1) == 2
    assert tools.beside(lambda model: type(model[0]).__name__, copy) == "Linear"
    assert tools.beside(lambda model: sum(1 for _ in model.parameters()) + len(make()), copy) == 6



def test_a_students_function_is_found_inside_a_partial_or_what_a_tests_function_reads(sandbox):
    """A student's function whose exercise's rule is broken raises ForbiddenOperation however a test
    hands it to the tools: bound in a functools.partial (as beside's function or among its
    arguments), or read by the test's own function. Found nowhere, it would run beside as the
    grader's code: neither the static verdict nor the watch of the student's process would apply."""
    rule = {"exercise": "fit", "words": ["relu"], "modules": ["torch.nn.functional"], "why": "by hand"}
    session = Session(sandbox, sandbox.limits, {"fit": rule})
    install_runner(Runner(session))
    try:
        run(session, "import torch\nimport torch.nn.functional as F\ndef fit(x):\n    return F.relu(x) + 1\n")
        fit, ones = Proxy(session, "fit", "fit"), tools.student_copy(torch.ones(2))
        # a partial among the arguments, next to a handle: the watch sees F.relu
        with pytest.raises(ForbiddenOperation, match="relu"):
            tools.call_unchanged("fit", functools.partial(fit), ones)
        session.forbidden.clear()
        # a partial as beside's function runs beside the handle it binds, the watch on
        assert tools.beside(functools.partial(lambda x: type(x).__name__, ones)) == "Tensor"
        with pytest.raises(ForbiddenOperation, match="relu"):
            tools.beside(functools.partial(lambda f, x: f(x), fit), ones)
        session.forbidden.clear()
        with pytest.raises(ForbiddenOperation, match="relu"):  # a closure of the test's own function
            tools.beside(lambda x: fit(x), ones)
        session.forbidden.clear()
        with pytest.raises(ForbiddenOperation, match="relu"):  # a bound method of the test's own object
            tools.beside(types.MethodType(lambda self, x: self[0](x), [fit]), ones)
        # once the static rule has judged fit, a partial or a closure cannot carry it past the verdict
        session.forbidden["fit"] = "uses torch.nn.functional.relu: by hand"
        for call in (lambda: tools.beside(functools.partial(fit), ones), lambda: tools.beside(lambda x: fit(x), ones)):
            with pytest.raises(ForbiddenOperation, match="by hand"):
                call()
    finally:
        install_runner(None)
        session.close()

def test_a_malformed_reply_ends_the_process_with_a_finding(sandbox):
    session = Session(sandbox, sandbox.limits)
    run(session, """
import os, pickle, struct, socket
def forge(t):
    fd = next(f for f in range(3, 64) if os.path.exists(f"/proc/self/fd/{f}")
              and os.readlink(f"/proc/self/fd/{f}").startswith("socket:"))
    payload = pickle.dumps({"status": "ok", "result": t})  # a pickle: never loaded by the grader
    os.write(fd, struct.pack("!Q", len(payload)) + payload)
    import time
    time.sleep(30)
""")
    t = torch.ones(3)
    with pytest.raises(StudentProcessGone):
        Proxy(session, "forge", "fit")(t)
    assert t.tolist() == [1.0, 1.0, 1.0]
    assert "malformed-reply" in [f.vector for f in session.findings]
    session.close()


# --------------------------------------------------------------------------- the decoder alone


@pytest.mark.parametrize("body", [
    b'{"result": {"x": 1}}',  # an unknown tag
    b'{"result": {"nd": ["|O", [1], 0, 8]}}',  # object arrays
    b'{"result": {"nd": ["<f8", [4], 0, 8]}}',  # bytes that do not match the shape
    b'{"result": {"nd": ["<f8", [1], 100, 8]}}',  # a buffer beyond the end
    b'{"result": {"pt": ["float64", [-1], 0, 0, false]}}',  # a negative dimension
    b'{"result": {"d": [[[1], 2]]}}',  # an unhashable key
    b'{"result": ' + b"[" * 5000 + b"]" * 5000 + b"}",  # nested beyond any limit
    b'["not", "an", "object"]',
    b'\xff\xfe not json',
])
def test_the_decoder_refuses_what_is_not_data(body):
    with pytest.raises(wire.Malformed):
        wire.decode(len(body).to_bytes(4, "big") + body)


def test_the_encoder_and_decoder_round_trip_data_and_strip_lone_surrogates():
    odd = torch.empty_strided((2, 1), (1, 5), dtype=torch.float64).fill_(3.0)  # "contiguous", yet stride(-1) is 5
    value = {"a": [1, 2.5, "t\udc80x"], "b": (np.arange(4, dtype=np.int16).reshape(2, 2), torch.eye(2), odd,
                                             torch.zeros(4, 3, 2, 1).to(memory_format=torch.channels_last)),
             "c": collections.OrderedDict(k=1)}
    kept = []
    decoded = wire.decode(wire.encode({"status": "ok", "result": value}, kept.append), None)["result"]
    assert decoded["a"] == [1, 2.5, "t?x"] and decoded["c"] == {"k": 1}
    assert decoded["b"][0].dtype == np.int16 and decoded["b"][0].tolist() == [[0, 1], [2, 3]]
    assert torch.equal(decoded["b"][1], torch.eye(2)) and torch.equal(decoded["b"][2], odd)
    assert decoded["b"][3].shape == (4, 3, 2, 1)


# --------------------------------------------------------------------------- one student cannot reach the next


def test_the_fork_server_cannot_be_reached(sandbox):
    """PID 1 of the sandbox is the fork server: its memory, its file descriptors and its signals are out of reach."""
    session = Session(sandbox, sandbox.limits)
    reply = run(session, """
import ctypes, os, signal
libc = ctypes.CDLL(None, use_errno=True)
results = {}
for target in ("/proc/1/mem", "/proc/1/fd/3", "/proc/1/environ"):
    try:
        open(target, "r+b").close()
        results[target] = "opened"
    except OSError as error:
        results[target] = error.errno
pidfd = libc.syscall(434, 1, 0)
results["pidfd_open"] = ctypes.get_errno() if pidfd < 0 else "ok"
results["pidfd_getfd"] = (libc.syscall(438, max(pidfd, 0), 3, 0), ctypes.get_errno())
results["ptrace"] = (libc.ptrace(16, 1, 0, 0), ctypes.get_errno())
results["process_vm_readv"] = (libc.syscall(310, 1, 0, 0, 0, 0, 0), ctypes.get_errno())
results["shmget"] = (libc.shmget(0x4242, 4096, 0o1666), ctypes.get_errno())
results["unshare"] = (libc.unshare(0x10000000), ctypes.get_errno())
for sig in (signal.SIGSTOP, signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
    os.kill(1, sig)
print(results)
""")
    results = eval(stdout(reply))  # noqa: S307 (our own test's printout)
    assert all(results[t] != "opened" for t in ("/proc/1/mem", "/proc/1/fd/3", "/proc/1/environ")), results
    for call in ("pidfd_getfd", "ptrace", "process_vm_readv", "shmget", "unshare"):
        assert results[call] == (-1, 1), (call, results)  # EPERM: the seccomp filter
    session.close()
    fresh = Session(sandbox, sandbox.limits)  # the signals did nothing: the server still forks
    assert stdout(run(fresh, "print('alive')")) == "alive\n"
    fresh.close()


def test_nothing_survives_from_one_student_to_the_next(sandbox):
    first = Session(sandbox, sandbox.limits)
    run(first, """
import os, time
for folder in ("/scratch/keep", "/tmp/keep", "/scratch/deep/a/b"):
    os.makedirs(folder, exist_ok=True)
    with open(f"{folder}/planted.py", "w") as module:
        module.write("SECRET = 'from the last student'\\n")
os.chmod("/scratch/deep/a", 0o000)
os.chmod("/scratch/keep", 0o555)
os.chmod("/tmp/keep", 0o555)
os.symlink("/", "/tmp/root-link")
os.mkfifo("/tmp/fifo")
os.chmod("/scratch", 0o000)
if os.fork() == 0:  # a daemon that waits for the next student
    os.setsid()
    while True:
        time.sleep(0.01)
""")
    first.close()
    second = Session(sandbox, sandbox.limits)
    reply = run(second, """
import os, subprocess
print((sorted(os.listdir("/scratch")), sorted(os.listdir("/tmp")), sorted(p for p in os.listdir("/proc") if p.isdigit())))
try:
    import planted
    print("imported")
except ImportError:
    print("nothing to import")
""")
    listing, imported = stdout(reply).splitlines()
    scratch, tmp, pids = eval(listing)  # noqa: S307
    assert scratch == mount_points_in("/scratch") and tmp == mount_points_in("/tmp") and imported == "nothing to import"
    assert len(pids) == 2, pids  # the fork server and this process
    second.close()


def test_a_full_disk_and_the_output_of_a_notebook_are_capped():
    small = Sandbox(Limits(cell_seconds=20, notebook_seconds=60, memory_bytes=2**30, disk_bytes=32 * 2**20,
                           output_bytes=50_000))
    session = Session(small, small.limits)
    reply = run(session, """
written = 0
try:
    with open("/tmp/big", "wb") as f:
        for _ in range(64):
            f.write(b"x" * 2**20)
            written += 1
except OSError as error:
    print("stopped after", written, "MB:", error.strerror)
""")
    assert "stopped after" in stdout(reply) and int(stdout(reply).split()[2]) <= 32
    total = 0
    for _ in range(5):  # five cells of 30,000 characters: the notebook keeps 50,000 in all
        total += len(stdout(run(session, "print('y' * 30_000)")))
    assert 50_000 <= total < 51_000
    observed = [f.vector for f in session.observations()]
    assert "huge-output" in observed
    session.close()
    small.close()


def test_over_the_output_limit_errors_and_stderr_still_count():
    """Output cut for size never hides what grades are made of: errors, and the fact of stderr output."""
    from grading.student import Capture, make_shell

    shell = make_shell()
    with Capture(shell, 100) as captured:
        print("x" * 500)
        shell.run_cell("raise AssertionError('hidden test failed')", store_history=False)
        sys_stderr_text = "a warning\n" * 50
        import sys

        sys.stderr.write(sys_stderr_text)
    kinds = [(o["output_type"], o.get("name")) for o in captured.outputs()]
    assert ("error", None) in kinds and ("stream", "stderr") in kinds and captured.cut > 0


def test_a_call_takes_tensors_of_any_layout_and_reports_only_real_changes(session):
    """The checksums of a call's arguments (taken to notice in-place changes) must not fail on any
    layout a test may pass: a strided 1-D column, a transposed matrix, channels_last, a 0-dim
    tensor, a bool mask, an expanded view, a numpy view with negative strides."""
    run(session, """
import torch
def total(*tensors):
    return float(sum(float(t.double().sum()) if isinstance(t, torch.Tensor) else float(t.sum()) for t in tensors))
def scale_first(t, *rest):
    t.mul_(2)
    return 0.0
""")
    base = torch.arange(12.0).reshape(3, 4)
    arguments = (base[:, 0], base.t(), torch.zeros(2, 3, 4, 5).to(memory_format=torch.channels_last),
                 torch.tensor(1.5), torch.tensor([True, False]), torch.ones(3).expand(4, 3), np.arange(6.0)[::-2])
    expected = sum(float(torch.as_tensor(np.ascontiguousarray(a) if isinstance(a, np.ndarray) else a).double().sum())
                   for a in arguments)
    assert Proxy(session, "total", "fit")(*arguments) == expected
    assert "inputs-changed" not in [f.vector for f in session.observations()]
    column = base[:, 1]  # strided: every fourth number
    assert Proxy(session, "scale_first", "fit")(column, base.t()) == 0.0
    assert torch.equal(column, torch.tensor([1.0, 5.0, 9.0]))  # the test's own copy is unchanged
    assert "inputs-changed" in [f.vector for f in session.observations()]
