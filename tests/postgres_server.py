"""A throwaway PostgreSQL server for tests and benchmarks, from the machine's own PostgreSQL binaries.

`PostgresServer.start(folder)` runs `initdb` and `pg_ctl start` on a free loopback port with durability off
(fsync, synchronous commit, full-page writes: a test database need not survive a power cut, and it makes
`CREATE DATABASE` and commits fast). `initdb` refuses to run as root, so as root the server runs as an
unprivileged system user created once (`strata-pg`). Each test gets a fresh database copied from a migrated
template (`fresh_database()`), which is faster than migrating every time.

Binaries: `STRATA_PG_BIN` if set, else the newest `/usr/lib/postgresql/*/bin` (Debian's layout), else PATH.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
from pathlib import Path

RUN_AS = "strata-pg"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL binaries here, or the server would not start (the message says which)."""


def _bindir() -> Path:
    if env := os.environ.get("STRATA_PG_BIN"):
        return Path(env)
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin"), 
                   key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    if found:
        return found[-1]
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise PostgresUnavailable("no PostgreSQL server binaries (initdb) found; set STRATA_PG_BIN")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    def __init__(self, folder: Path, port: int, bindir: Path, prefix: list[str]) -> None:
        self.folder, self.port, self._bindir, self._prefix = folder, port, bindir, prefix
        self._numbers = itertools.count(1)
        self.template: str | None = None

    @property
    def admin_url(self) -> str:
        return self.url("postgres")

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @classmethod
    def start(cls, folder: Path) -> PostgresServer:
        bindir = _bindir()
        folder.mkdir(parents=True, exist_ok=True)
        prefix: list[str] = []
        if os.geteuid() == 0:
            if subprocess.run(["id", "-u", RUN_AS], capture_output=True).returncode != 0:  # noqa: S603,S607
                _run(["useradd", "-M", "-r", "-s", "/usr/sbin/nologin", RUN_AS])
            shutil.chown(folder, RUN_AS, RUN_AS)
            os.chmod(folder, 0o700)
            prefix = ["runuser", "-u", RUN_AS, "--"]
        data = folder / "pgdata"
        port = _free_port()
        _run([*prefix, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
              "--no-sync", "--no-locale"])
        options = (f"-k {data} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
                   "-c full_page_writes=off -c max_connections=400")
        _run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w",
              "start"])
        return cls(folder, port, bindir, prefix)

    def stop(self) -> None:
        command = [*self._prefix, str(self._bindir / "pg_ctl"), "-D", str(self.folder / "pgdata"), "-m", "immediate",
                   "-w", "stop"]
        subprocess.run(command, capture_output=True)  # noqa: S603

    async def fresh_database(self) -> str:
        """A new, migrated, empty database's URL (copied from a template migrated once)."""
        import asyncpg

        from storage.store import Store

        if self.template is None:
            conn = await asyncpg.connect(self.admin_url)
            try:
                await conn.execute("CREATE DATABASE strata_template")
            finally:
                await conn.close()
            store = await Store.open(self.url("strata_template"))
            await store.close()
            self.template = "strata_template"
        name = f"t{os.getpid()}_{next(self._numbers)}"
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE {self.template}')
        finally:
            await conn.close()
        return self.url(name)


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True)  # noqa: S603
    if done.returncode != 0:
        program = Path(command[command.index("--") + 1] if "--" in command else command[0]).name
        raise PostgresUnavailable(f"{program}: {(done.stderr or done.stdout).strip()[-500:]}")
