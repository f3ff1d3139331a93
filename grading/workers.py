"""Parallel autograding: N workers on one machine, or workers on several hosts.

Each worker is a process that imports numpy, torch and IPython once, keeps one warm sandbox
(:mod:`grading.sandbox`), and runs nbgrader's own ``Autograde`` for one student at a time. Which
worker grades which submission is decided by **claims** in the gradebook's own database (table
``grading_claims``, key assignment + student): a worker grades a submission only after its claim
succeeded, so none is graded twice, and since every worker tries every submission, none is left
out. A claim can be taken over when it went stale (a worker on another host died while grading)
or failed in an earlier run. A worker that dies here (killed, out of memory) or hangs is replaced;
its student is graded once more, then reported as failed. With the gradebook on PostgreSQL
(``--db postgresql://...``), workers on several hosts that share the course folder divide a class
between them the same way.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import queue
import signal
import socket
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path

import sqlalchemy as sa

CLAIMS = sa.Table(
    "grading_claims", sa.MetaData(),
    sa.Column("assignment", sa.String(128), primary_key=True),
    sa.Column("student", sa.String(128), primary_key=True),
    sa.Column("worker", sa.String(200), nullable=False),
    sa.Column("claimed_at", sa.DateTime, nullable=False),
    sa.Column("finished_at", sa.DateTime),
    sa.Column("status", sa.String(16), nullable=False),  # grading, graded, failed
    sa.Column("message", sa.Text),
)
DIED = "the worker grading it died"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def engine_for(db_url: str) -> sa.Engine:
    """An engine that waits for SQLite's lock instead of failing (several workers write)."""
    if db_url.startswith("sqlite"):
        return sa.create_engine(db_url, connect_args={"timeout": 120})
    return sa.create_engine(db_url, pool_pre_ping=True)


def create_claims(engine: sa.Engine) -> None:
    """The claims table, created once even when several hosts start together: on PostgreSQL under an
    advisory lock (concurrent CREATE TABLEs race on the catalog), elsewhere a lost race is forgiven."""
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":  # held until this transaction ends
                connection.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('grading_claims'))"))
            CLAIMS.create(connection, checkfirst=True)
    except sa.exc.DBAPIError:
        if not sa.inspect(engine).has_table(CLAIMS.name):
            raise


def reset_claims(db_url: str, assignment: str, students: list[str] | None = None) -> None:
    """Forget earlier claims (``--force``: grade these submissions again)."""
    engine = engine_for(db_url)
    create_claims(engine)
    query = CLAIMS.delete().where(CLAIMS.c.assignment == assignment)
    with engine.begin() as connection:
        connection.execute(query.where(CLAIMS.c.student.in_(students)) if students else query)
    engine.dispose()


def claims(db_url: str, assignment: str) -> list[dict]:
    engine = engine_for(db_url)
    create_claims(engine)
    with engine.connect() as connection:
        rows = connection.execute(sa.select(CLAIMS).where(CLAIMS.c.assignment == assignment)).mappings().all()
    engine.dispose()
    return [dict(r) for r in rows]


@dataclass(frozen=True)
class Job:
    course: Path
    assignment: str
    students: tuple[str, ...]
    db_url: str
    host: str = socket.gethostname()
    started: dt.datetime = dt.datetime.min  # the batch's start: earlier failures are tried again
    stale_seconds: float = 3600.0  # a claim older than this, still "grading", belongs to a dead worker
    retry: tuple[str, ...] = ()  # students whose worker died in this batch: claimed once more


def claim(engine: sa.Engine, job: Job, student: str, worker: str) -> bool:
    """Claim ``student``: a new claim, or one that went stale or failed before this batch began."""
    values = dict(worker=worker, claimed_at=_now(), status="grading", finished_at=None, message=None)
    try:
        with engine.begin() as connection:
            connection.execute(CLAIMS.insert().values(assignment=job.assignment, student=student, **values))
        return True
    except sa.exc.IntegrityError:
        pass
    again = ((CLAIMS.c.status == "failed") & (CLAIMS.c.finished_at < job.started)) | (
        (CLAIMS.c.status == "grading") & (CLAIMS.c.claimed_at < _now() - dt.timedelta(seconds=job.stale_seconds)))
    if student in job.retry:
        again = again | ((CLAIMS.c.status == "failed") & CLAIMS.c.message.startswith(DIED))
    where = (CLAIMS.c.assignment == job.assignment) & (CLAIMS.c.student == student) & again
    with engine.begin() as connection:
        return connection.execute(CLAIMS.update().where(where).values(**values)).rowcount == 1


def finish(engine: sa.Engine, assignment: str, student: str, status: str, message: str = "", worker=None) -> None:
    where = (CLAIMS.c.assignment == assignment) & (CLAIMS.c.student == student)
    if worker is not None:
        where = where & (CLAIMS.c.worker == worker) & (CLAIMS.c.status == "grading")
    with engine.begin() as connection:
        connection.execute(CLAIMS.update().where(where).values(status=status, message=message[-4000:],
                                                               finished_at=_now()))


def worker_name(job: Job, pid: int, number: int) -> str:
    return f"{job.host}:{pid}:{number}"


def worker_main(job: Job, number: int, events) -> None:
    """One worker: warm imports, then claim and grade until every student was tried."""
    from grading.sandbox import pinned_environment

    os.environ.update(pinned_environment())  # before torch looks at the GPUs
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # N workers share the cores: one thread each
    import numpy  # noqa: F401  (warm: the grader's tests import these in every notebook)
    import torch
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    from grading.config import load_course_config
    from grading.execute import close_sandboxes

    torch.set_num_threads(1)
    db_url = job.db_url  # nbgrader's own engine waits for SQLite's lock too
    if db_url.startswith("sqlite") and "timeout=" not in db_url:
        db_url += ("&" if "?" in db_url else "?") + "timeout=120"
    config = load_course_config(job.course, db_url=db_url, worker=number)
    engine, name = engine_for(job.db_url), worker_name(job, os.getpid(), number)
    for student in job.retry + job.students:
        if not claim(engine, job, student, name):
            continue
        started = time.monotonic()
        try:
            result = NbGraderAPI(CourseDirectory(config=config), config=config).autograde(
                job.assignment, student, force=True, create=True)
            status, message = ("graded", "") if result.get("success") else (
                "failed", str(result.get("error") or result.get("log", ""))[-4000:])
        except Exception:
            status, message = "failed", traceback.format_exc()
        finish(engine, job.assignment, student, status, message)
        events.put((student, status, message, time.monotonic() - started))
    engine.dispose()
    close_sandboxes()
    events.put(("done", number))


def run_workers(job: Job, workers: int, progress=None) -> list[tuple[str, str, str, float]]:
    """Grade ``job.students`` with ``workers`` processes; one (student, status, message, seconds) each.

    A worker that dies, or whose claim is older than ``job.stale_seconds``, is killed and replaced;
    the student it was grading is tried once more, then reported as failed.
    """
    engine = engine_for(job.db_url)
    create_claims(engine)
    job = replace(job, started=_now())
    context = multiprocessing.get_context("fork")  # before torch is imported here: fork is safe
    events, running, died, results = context.Queue(), {}, {}, []

    def start(number: int, retry: tuple[str, ...] = ()) -> None:
        running[number] = context.Process(target=worker_main, args=(replace(job, retry=retry), number, events),
                                          daemon=True)
        running[number].start()

    def report(result: tuple) -> None:
        results.append(result)
        if progress is not None:
            progress(result)

    for number in range(workers):
        start(number)
    checked = time.monotonic()
    while running:
        try:
            event = events.get(timeout=1.0)
        except queue.Empty:
            event = None
        if event is not None and event[0] == "done":
            running.pop(event[1]).join()
        elif event is not None:
            report(event)
        if time.monotonic() - checked > 10:  # a worker stuck on one student is treated as dead
            checked, stale = time.monotonic(), _now() - dt.timedelta(seconds=job.stale_seconds)
            for number, process in list(running.items()):
                with engine.connect() as connection:
                    stuck = connection.execute(sa.select(CLAIMS.c.student).where(
                        (CLAIMS.c.worker == worker_name(job, process.pid, number)) & (CLAIMS.c.status == "grading")
                        & (CLAIMS.c.claimed_at < stale))).first()
                if stuck:
                    os.kill(process.pid, signal.SIGKILL)
        for number, process in list(running.items()):
            if process.is_alive() or not events.empty():
                continue
            running.pop(number).join()
            name, code = worker_name(job, process.pid, number), process.exitcode
            how = f"exit code {code}"
            if code is not None and code < 0:
                how = f"killed by {signal.Signals(-code).name}" + ", perhaps out of memory" * (code == -signal.SIGKILL)
            retry = []
            for row in claims(job.db_url, job.assignment):
                if row["worker"] == name and row["status"] == "grading":
                    student = row["student"]
                    died[student] = died.get(student, 0) + 1
                    finish(engine, job.assignment, student, "failed", f"{DIED} ({how})", worker=name)
                    if died[student] < 2:
                        retry.append(student)
                    else:
                        report((student, "failed", f"{DIED} ({how}), twice", 0.0))
            start(number, tuple(retry))
    engine.dispose()
    return results
