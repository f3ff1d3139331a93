"""Parallel autograding: N workers on one machine, or workers on several hosts.

Each worker is a process that imports numpy, torch and IPython once, keeps one warm
sandbox (:mod:`grading.sandbox`), and runs nbgrader's own ``Autograde`` converter for
one student at a time. Which worker grades which submission is decided by **claims**
in the gradebook's own database (table ``grading_claims``, primary key assignment +
student): a worker grades a submission only after its ``INSERT`` of the claim
succeeded, so no submission is graded twice and, because every submission is tried
by every worker until one claims it, none is left out. With the gradebook on
PostgreSQL (``--db postgresql://...``), workers on several hosts that share the
course folder (NFS, a cluster file system) divide one class between them the same way.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import socket
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

CLAIMS = sa.Table(
    "grading_claims",
    sa.MetaData(),
    sa.Column("assignment", sa.String(128), primary_key=True),
    sa.Column("student", sa.String(128), primary_key=True),
    sa.Column("worker", sa.String(200), nullable=False),
    sa.Column("claimed_at", sa.DateTime, nullable=False),
    sa.Column("finished_at", sa.DateTime),
    sa.Column("status", sa.String(16), nullable=False),  # grading, graded, failed
    sa.Column("message", sa.Text),
)


def engine_for(db_url: str) -> sa.Engine:
    """An engine that waits for SQLite's lock instead of failing (several workers write)."""
    if db_url.startswith("sqlite"):
        return sa.create_engine(db_url, connect_args={"timeout": 120})
    return sa.create_engine(db_url, pool_pre_ping=True)


def sqlite_url_with_timeout(db_url: str) -> str:
    """nbgrader's own Gradebook engine: the same busy timeout, through the URL."""
    if db_url.startswith("sqlite") and "timeout=" not in db_url:
        return db_url + ("&" if "?" in db_url else "?") + "timeout=120"
    return db_url


def reset_claims(db_url: str, assignment: str, students: list[str] | None = None) -> None:
    """Forget earlier claims (``--force``: grade these submissions again)."""
    engine = engine_for(db_url)
    CLAIMS.create(engine, checkfirst=True)
    with engine.begin() as connection:
        query = CLAIMS.delete().where(CLAIMS.c.assignment == assignment)
        if students:
            query = query.where(CLAIMS.c.student.in_(students))
        connection.execute(query)
    engine.dispose()


def claim(engine: sa.Engine, assignment: str, student: str, worker: str) -> bool:
    try:
        with engine.begin() as connection:
            connection.execute(CLAIMS.insert().values(
                assignment=assignment, student=student, worker=worker,
                claimed_at=dt.datetime.now(dt.UTC).replace(tzinfo=None), status="grading"))
        return True
    except sa.exc.IntegrityError:
        return False


def finish(engine: sa.Engine, assignment: str, student: str, status: str, message: str = "") -> None:
    with engine.begin() as connection:
        connection.execute(CLAIMS.update().where(
            (CLAIMS.c.assignment == assignment) & (CLAIMS.c.student == student)).values(
            status=status, message=message[-4000:],
            finished_at=dt.datetime.now(dt.UTC).replace(tzinfo=None)))


def claims(db_url: str, assignment: str) -> list[dict]:
    engine = engine_for(db_url)
    CLAIMS.create(engine, checkfirst=True)
    with engine.connect() as connection:
        rows = connection.execute(sa.select(CLAIMS).where(CLAIMS.c.assignment == assignment)).mappings().all()
    engine.dispose()
    return [dict(r) for r in rows]


# --------------------------------------------------------------------------- workers


@dataclass(frozen=True)
class Job:
    course: Path
    assignment: str
    students: tuple[str, ...]
    db_url: str
    host: str = socket.gethostname()


def worker_main(job: Job, number: int, events) -> None:
    """One worker: warm imports, then claim and grade until every student was tried."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # N workers share the cores: one thread each
    import numpy  # noqa: F401  (warm: the grader's tests import these in every notebook)
    import torch

    torch.set_num_threads(1)
    from grading.config import load_course_config

    config = load_course_config(job.course, db_url=sqlite_url_with_timeout(job.db_url), worker=number)
    engine = engine_for(job.db_url)
    name = f"{job.host}:{os.getpid()}:{number}"
    for student in job.students:
        if not claim(engine, job.assignment, student, name):
            continue
        started = time.monotonic()
        try:
            status, message = autograde_one(config, job.assignment, student)
        except Exception:
            status, message = "failed", traceback.format_exc()
        finish(engine, job.assignment, student, status, message)
        events.put((student, status, message, time.monotonic() - started))
    engine.dispose()
    from grading.execute import close_sandboxes

    close_sandboxes()
    events.put(None)


def autograde_one(config, assignment: str, student: str) -> tuple[str, str]:
    """nbgrader's ``autograde`` for one student, in this process."""
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    api = NbGraderAPI(CourseDirectory(config=config), config=config)
    result = api.autograde(assignment, student, force=True, create=True)
    if result.get("success"):
        return "graded", ""
    return "failed", str(result.get("error") or result.get("log", ""))[-4000:]


def run_workers(job: Job, workers: int, progress=None) -> list[tuple[str, str, str, float]]:
    """Grade ``job.students`` with ``workers`` processes; one (student, status, message, s) per grade."""
    engine = engine_for(job.db_url)
    CLAIMS.create(engine, checkfirst=True)
    engine.dispose()
    context = multiprocessing.get_context("fork")  # before torch is imported here: fork is safe
    events = context.Queue()
    processes = [context.Process(target=worker_main, args=(job, number, events), daemon=True)
                 for number in range(workers)]
    for process in processes:
        process.start()
    results, running = [], workers
    while running:
        event = events.get()
        if event is None:
            running -= 1
            continue
        results.append(event)
        if progress is not None:
            progress(event)
    for process in processes:
        process.join()
    return results
