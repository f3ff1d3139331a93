"""Parallel grading: no lost and no duplicated grades, on SQLite and on PostgreSQL.

A batch of 200 chapter-1 submissions (5% of them broken files) is graded by two
workers on one machine; a smaller class is graded by two concurrent ``autograde``
commands (two "hosts", two workers each) sharing a gradebook on a real PostgreSQL
server (``tests/postgres.py``).
"""

from __future__ import annotations

import subprocess
import sys

import nbformat
import pytest
from postgres import fresh_database

import harness
from grading import workers

ASSIGNMENT = "ch01_perceptron"
REFERENCE_POINTS, FIT_POINTS = 20.0, 6.0


def _class(course, counts: dict[str, int]) -> dict[str, float | None]:
    """Write submissions; student id -> the score it must get (None: must be quarantined)."""
    release = nbformat.read(course / "exercises" / ASSIGNMENT / "perceptron.ipynb", as_version=4)
    codes = harness.reference_codes(harness.SOLUTIONS / ASSIGNMENT / "perceptron.ipynb")
    kinds = {
        "reference": (harness.submission(release, codes), REFERENCE_POINTS),
        "partial": (harness.submission(release, {"fit": codes["fit"]}), FIT_POINTS),
        "blank": (release, 0.0),
        "broken": (b'{"nbformat": 4, "cells": [{"cell_type": "code", "sour', None),
    }
    expected = {}
    for kind, count in counts.items():
        notebook, score = kinds[kind]
        for index in range(count):
            student = f"{kind}-{index:03d}"
            folder = course / "submitted" / student / ASSIGNMENT
            folder.mkdir(parents=True, exist_ok=True)
            data = notebook if isinstance(notebook, bytes) else nbformat.writes(notebook).encode()
            (folder / "perceptron.ipynb").write_bytes(data)
            expected[student] = score
    return expected


def _grade(course, *extra: str, db: str | None = None) -> subprocess.Popen:
    command = [sys.executable, "-m", "grading", "--course", str(course)]
    command += ["--db", db] if db else []
    return subprocess.Popen([*command, "autograde", ASSIGNMENT, *extra], cwd=harness.REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _scores(db_url: str, students) -> dict[str, float]:
    from nbgrader.api import Gradebook, MissingEntry

    found = {}
    with Gradebook(db_url, harness.course_id()) as gradebook:
        for student in students:
            try:
                found[student] = gradebook.find_submission(ASSIGNMENT, student).score
            except MissingEntry:
                pass
    return found


def _check_every_grade_once(db_url: str, expected: dict[str, float | None]) -> list[dict]:
    rows = workers.claims(db_url, ASSIGNMENT)
    claimed = [r["student"] for r in rows]
    good = {s: v for s, v in expected.items() if v is not None}
    assert sorted(claimed) == sorted(good), "each good submission is claimed exactly once, the broken ones never"
    assert {r["status"] for r in rows} == {"graded"}, [r for r in rows if r["status"] != "graded"][:3]
    assert _scores(db_url, expected) == good
    return rows


def test_a_batch_of_200_with_broken_files_grades_every_good_one_once(tmp_path):
    course = harness.make_course(tmp_path, ASSIGNMENT)
    harness.generate_release(course, ASSIGNMENT)
    expected = _class(course, {"reference": 80, "partial": 60, "blank": 50, "broken": 10})
    assert len(expected) == 200
    proc = _grade(course, "--workers", "2")
    log = proc.communicate(timeout=1500)[0]
    assert proc.returncode == 0, log[-3000:]
    db_url = f"sqlite:///{course / 'gradebook.db'}"
    rows = _check_every_grade_once(db_url, expected)
    assert len({r["worker"] for r in rows}) == 2, "both workers took a share"
    quarantined = sorted(p.parent.name for p in (course / "quarantine" / ASSIGNMENT).glob("*/reason.txt"))
    assert quarantined == sorted(s for s, v in expected.items() if v is None)
    assert "graded 190 of 190" in log, log[-2000:]


@pytest.mark.usefixtures("postgres_url")
def test_several_hosts_share_a_postgresql_gradebook(tmp_path, postgres_url):
    db_url = fresh_database(postgres_url, "grading_hosts")
    course = harness.make_course(tmp_path, ASSIGNMENT)
    release = subprocess.run([sys.executable, "-m", "grading", "--course", str(course), "--db", db_url,
                              "release", ASSIGNMENT], cwd=harness.REPO, capture_output=True, text=True)
    assert release.returncode == 0, release.stderr[-3000:]
    expected = _class(course, {"reference": 8, "partial": 6, "blank": 6})
    # two "hosts" at once, each with two workers, on one gradebook and one course folder
    hosts = [_grade(course, "--workers", "2", "--skip-preflight", db=db_url) for _ in range(2)]
    logs = [host.communicate(timeout=900)[0] for host in hosts]
    assert [h.returncode for h in hosts] == [0, 0], [log[-2000:] for log in logs]
    rows = _check_every_grade_once(db_url, expected)
    assert len({r["worker"].rsplit(":", 2)[1] for r in rows}) >= 2, "both hosts graded part of the class"
    # grading again without --force grades nothing twice; with it, everything again
    again = _grade(course, "--workers", "2", "--skip-preflight", db=db_url)
    assert "graded 0 of 20" in again.communicate(timeout=600)[0]



@pytest.mark.usefixtures("postgres_url")
def test_hosts_that_start_together_create_the_claims_table_once(postgres_url):
    """Concurrent CREATE TABLEs race on PostgreSQL's catalog (a duplicate ``pg_type`` row, or "already
    exists"): eight hosts that start at once, five times over, each find or create the table."""
    import threading

    db_url = fresh_database(postgres_url, "grading_claims_race")
    engines = [workers.engine_for(db_url) for _ in range(8)]
    errors = []

    def host(engine, barrier):
        barrier.wait()
        try:
            workers.create_claims(engine)
        except Exception as error:  # collected, then shown by the assertion
            errors.append(error)

    for _ in range(5):
        workers.CLAIMS.drop(engines[0], checkfirst=True)
        for engine in engines:
            engine.connect().close()  # connected before the start, so that the CREATEs meet
        barrier = threading.Barrier(len(engines))
        threads = [threading.Thread(target=host, args=(engine, barrier)) for engine in engines]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not errors, errors[:2]
        assert workers.claims(db_url, ASSIGNMENT) == []
    for engine in engines:
        engine.dispose()

def test_a_worker_killed_mid_batch_does_not_hang_it_and_its_student_is_graded(tmp_path):
    """A worker killed while it grades (as the out-of-memory killer would) is replaced, and the
    student it was grading is graded again; the batch ends with every grade."""
    import datetime as dt
    import os
    import signal
    import time

    course = harness.make_course(tmp_path, ASSIGNMENT)
    harness.generate_release(course, ASSIGNMENT)
    expected = _class(course, {"reference": 6, "partial": 2})
    release = nbformat.read(course / "exercises" / ASSIGNMENT / "perceptron.ipynb", as_version=4)
    slow = harness.submission(release, harness.reference_codes(harness.SOLUTIONS / ASSIGNMENT / "perceptron.ipynb"))
    slow.cells.insert(3, nbformat.v4.new_code_cell("import time\ntime.sleep(6)"))
    folder = course / "submitted" / "aaa-slow" / ASSIGNMENT
    folder.mkdir(parents=True)
    nbformat.write(slow, folder / "perceptron.ipynb")
    expected["aaa-slow"] = REFERENCE_POINTS
    # a claim left "grading" two hours ago by a worker on another host that died: it has gone stale
    db_url = f"sqlite:///{course / 'gradebook.db'}"
    engine = workers.engine_for(db_url)
    workers.CLAIMS.create(engine, checkfirst=True)
    with engine.begin() as connection:
        connection.execute(workers.CLAIMS.insert().values(
            assignment=ASSIGNMENT, student="reference-000", worker="elsewhere:1:0", status="grading",
            claimed_at=dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(hours=2)))
    engine.dispose()
    proc = _grade(course, "--workers", "2")
    killed = None
    deadline = time.monotonic() + 600
    while killed is None and time.monotonic() < deadline and proc.poll() is None:
        for row in workers.claims(db_url, ASSIGNMENT):
            if row["student"] == "aaa-slow" and row["status"] == "grading":
                killed = int(row["worker"].split(":")[1])
                os.kill(killed, signal.SIGKILL)
        time.sleep(0.2)
    log = proc.communicate(timeout=900)[0]
    assert killed is not None, log[-3000:]
    assert proc.returncode == 0, log[-3000:]
    rows = _check_every_grade_once(db_url, expected)
    assert any(str(killed) not in r["worker"] for r in rows if r["student"] == "aaa-slow")
