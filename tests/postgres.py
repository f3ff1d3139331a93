"""A throwaway PostgreSQL server for tests, from Debian's ``postgresql`` package.

The session fixture :func:`postgres_url` starts a server in a temporary folder that
listens only on a Unix socket there, with ``trust`` authentication, creates one
database and yields its SQLAlchemy URL. PostgreSQL refuses to run as root, so when the
tests run as root the server runs as the ``postgres`` system user (the package creates
it). :func:`fresh_database` adds another empty database on the same server.

Use it with ``pytest_plugins = ["postgres"]`` in ``conftest.py``, or import the
fixture into a test module.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy

SUPERUSER = "postgres"
DATABASE = "grading_tests"
NOT_INSTALLED = (
    "PostgreSQL is not installed (no initdb and pg_ctl on PATH or in /usr/lib/postgresql/*/bin): "
    ".ci/run installs it; by hand: apt-get install postgresql"
)


def postgres_bin() -> Path | None:
    """The folder with ``initdb`` and ``pg_ctl``: on PATH, or Debian's newest version."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl and Path(initdb).parent == Path(pg_ctl).parent:
        return Path(initdb).parent
    versions = [Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin") if (Path(p) / "pg_ctl").exists()]
    versions = [p for p in versions if (p / "initdb").exists() and p.parent.name.isdigit()]
    return max(versions, key=lambda p: int(p.parent.name), default=None)


def as_server_user() -> list[str]:
    """The command prefix that runs the server's programs: as ``postgres`` when we are root."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(SUPERUSER)
    except KeyError:
        pytest.fail(f"running as root, and there is no {SUPERUSER!r} system user to run PostgreSQL: " + NOT_INSTALLED)
    return ["runuser", "-u", SUPERUSER, "--"]


def run_as_server(command: list[str], folder: Path) -> None:
    """Run a PostgreSQL program as the server's user; fail the test with its output if it fails."""
    proc = subprocess.run([*as_server_user(), *command], cwd=folder, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        log = folder / "server.log"
        tail = log.read_text()[-3000:] if log.exists() else ""
        pytest.fail(f"{' '.join(command)} failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}{tail}")


def url_of(socket_dir: Path, database: str) -> str:
    return f"postgresql+psycopg2://{SUPERUSER}@/{database}?host={socket_dir}"


def create_database(url: str, name: str) -> None:
    """``CREATE DATABASE name`` on the server of ``url``."""
    engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text(f"CREATE DATABASE {engine.dialect.identifier_preparer.quote(name)}"))
    finally:
        engine.dispose()


def fresh_database(url: str, name: str) -> str:
    """Create an empty database ``name`` on the server of ``url``; its URL."""
    create_database(url, name)
    return sqlalchemy.engine.make_url(url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The SQLAlchemy URL of an empty database on a private PostgreSQL server (stopped at the end)."""
    bindir = postgres_bin()
    if bindir is None:
        pytest.fail(NOT_INSTALLED, pytrace=False)
    folder = Path(tempfile.mkdtemp(prefix="pytest-postgres-"))
    if os.geteuid() == 0:
        shutil.chown(folder, user=SUPERUSER, group=pwd.getpwnam(SUPERUSER).pw_gid)
    data = folder / "data"
    try:
        run_as_server(
            [str(bindir / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8", "--no-sync"],
            folder,
        )
        server_options = f"-c listen_addresses='' -k {folder} -c fsync=off"
        pg_ctl = [str(bindir / "pg_ctl"), "-D", str(data)]
        run_as_server([*pg_ctl, "-o", server_options, "-l", str(folder / "server.log"), "-w", "start"], folder)
        try:
            create_database(url_of(folder, "postgres"), DATABASE)
            yield url_of(folder, DATABASE)
        finally:
            run_as_server([*pg_ctl, "-m", "fast", "-w", "stop"], folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
