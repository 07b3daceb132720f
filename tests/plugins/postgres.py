"""A PostgreSQL server for the session, when a test needs one or the suite runs on PostgreSQL.

`postgres_server` starts the machine's PostgreSQL (tests/postgres_server.py) once per session, unless
`STRATA_TEST_POSTGRES_URL` names a running one, and exports that variable so child processes use it. Where no
server can start, tests that need one are skipped, except in CI (`CI` set), where that is a failure: CI must
never pass by skipping PostgreSQL.

`any_database` runs a test on both backends: a SQLite file, then a fresh PostgreSQL database.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.databases import SERVER_VARIABLE, fresh_postgres_database, on_postgres
from tests.postgres_server import PostgresServer, PostgresUnavailable


@pytest.fixture(scope="session")
def postgres_server():
    """The admin URL of the session's PostgreSQL server."""
    if url := os.environ.get(SERVER_VARIABLE):
        yield url
        return
    folder = Path(tempfile.mkdtemp(prefix="strata-pg-"))
    try:
        server = PostgresServer.start(folder)
    except PostgresUnavailable as exc:
        shutil.rmtree(folder, ignore_errors=True)
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL could not start in CI: {exc}")
        pytest.skip(f"no PostgreSQL server here: {exc}")
    os.environ[SERVER_VARIABLE] = server.admin_url
    try:
        yield server.admin_url
    finally:
        os.environ.pop(SERVER_VARIABLE, None)
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _suite_backend(request):
    """On `STRATA_TEST_BACKEND=postgresql`, start the server before any test opens a database."""
    if on_postgres():
        request.getfixturevalue("postgres_server")


_numbers = iter(range(1, 1_000_000))


@pytest.fixture(params=["sqlite", "postgresql"])
async def any_database(request, tmp_path) -> Path | str:
    """An empty database (not migrated) on each backend in turn: a SQLite file path, or a PostgreSQL URL."""
    if request.param == "sqlite":
        return tmp_path / "main.db"
    admin = request.getfixturevalue("postgres_server")
    return await fresh_postgres_database(admin, f"a{os.getpid()}_{next(_numbers)}", migrated=False)


@pytest.fixture
async def main_database(request, tmp_path) -> Path | str:
    """A fresh main database on the suite's backend (SQLite unless STRATA_TEST_BACKEND=postgresql)."""
    if not on_postgres():
        return tmp_path / "main.db"
    admin = request.getfixturevalue("postgres_server")
    return await fresh_postgres_database(admin, f"m{os.getpid()}_{next(_numbers)}")
