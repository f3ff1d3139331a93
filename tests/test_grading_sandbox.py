"""The sandbox and the protocol, without nbgrader: what the student's process can and cannot do."""

from __future__ import annotations

import socket
import threading

import numpy as np
import pytest
import torch

from grading import wire
from grading.remote import StudentFunction, StudentProcessGone, StudentSession
from grading.sandbox import Limits, Sandbox

REPO_SECRET_PATHS = ["solutions", "gradebook.db", "submitted", "nbgrader_config.py"]


@pytest.fixture(scope="module")
def sandbox():
    box = Sandbox(Limits(cell_seconds=10, notebook_seconds=60, memory_bytes=2**30))
    yield box
    box.close()


def run(session: StudentSession, source: str) -> dict:
    return session.run_cell("fit", source, owned=True)


def stdout(reply: dict) -> str:
    return "".join(o.get("text", "") for o in reply["outputs"] if o["output_type"] == "stream")


@pytest.fixture
def session(sandbox):
    student = StudentSession(sandbox, sandbox.limits)
    yield student
    student.close()


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


def test_writes_go_only_to_the_scratch_folder(session):
    import sys

    reply = run(session, f"""
import os
results = []
for path in ["/scratch/mine.txt", "/tmp/mine.txt", "{sys.prefix}/written.txt", "/usr/written.txt", "/written.txt"]:
    try:
        with open(path, "w") as f:
            f.write("x")
        results.append("ok")
    except OSError:
        results.append("denied")
print(results)
""")
    assert stdout(reply).strip() == "['ok', 'ok', 'denied', 'denied', 'denied']"


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


def test_a_call_past_its_time_limit_is_stopped_with_the_reason(sandbox):
    session = StudentSession(sandbox, Limits(cell_seconds=2, notebook_seconds=60))
    run(session, "def fit():\n    while True:\n        pass\n\ndef ok():\n    return 1")
    with pytest.raises(StudentProcessGone, match="stopped in fit after 2 s"):
        StudentFunction(session, "fit")()
    with pytest.raises(StudentProcessGone):
        StudentFunction(session, "ok")()
    assert [f.vector for f in session.findings] == ["resource-abuse"]
    session.close()
    # the next student gets a fresh process from the same sandbox
    fresh = StudentSession(sandbox, sandbox.limits)
    run(fresh, "def ok():\n    return 1")
    assert StudentFunction(fresh, "ok")() == 1
    fresh.close()


def test_results_come_back_as_plain_data_or_opaque_handles(session):
    run(session, """
import numpy as np, torch
class Always(float):
    def __eq__(self, other):
        return True
class Thing:
    pass
def plain(x):
    return x * 2, {"n": 3, "t": torch.ones(2, dtype=torch.float64)}, [np.float32(1.5), None]
def rigged():
    return Always(1.0), np.zeros(2).view(type("Sub", (np.ndarray,), {"__eq__": lambda s, o: True}))
def handle():
    return Thing()
def back(thing):
    return type(thing).__name__
def in_place(a, params):
    a += 1
    params["W"] *= 2
    return a
""")
    doubled, info, items = StudentFunction(session, "plain")(np.arange(3))
    assert type(doubled) is np.ndarray and doubled.tolist() == [0, 2, 4]
    assert type(info["t"]) is torch.Tensor and info["t"].dtype == torch.float64
    assert type(items[0]) is np.float32 and items[1] is None
    for value in StudentFunction(session, "rigged")():
        assert isinstance(value, wire.RemoteObject)
        assert value != value.__class__ and not (value == 1.0)
    thing = StudentFunction(session, "handle")()
    assert StudentFunction(session, "back")(thing) == "Thing"
    a, params = np.zeros(2), {"W": np.ones(2)}
    w = params["W"]
    result = StudentFunction(session, "in_place")(a, params)
    assert result is a and a.tolist() == [1.0, 1.0]  # the same object, changed in place
    assert params["W"] is w and w.tolist() == [2.0, 2.0]


def test_the_plain_unpickler_refuses_classes():
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with pytest.raises(pickle.UnpicklingError):
        wire.loads_plain(pickle.dumps(Evil()))
