"""A real PostgreSQL server for the test session: ``initdb`` into a temporary folder, started on
a free loopback port (as the ``postgres`` user when the tests run as root, since PostgreSQL
refuses to run as root), one fresh database per test, stopped at the end of the session."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from hivebus.infra.managed_redis import free_port


def find_pg_bin() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``: PATH's, else Debian's /usr/lib/postgresql/N/bin."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(os.path.realpath(on_path)).parent
    def major(initdb: str) -> int:
        name = Path(initdb).parent.parent.name
        return int(name) if name.isdigit() else 0

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=major)
    return Path(found[-1]).parent if found else None


@dataclass
class PostgresServer:
    """A PostgreSQL server the test session started."""

    bin: Path
    dir: Path
    port: int
    as_user: list[str]

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A fresh, empty database; returns its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def pg_ctl(self, *args: str) -> None:
        subprocess.run([*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), *args],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)

    def stop(self) -> None:
        try:
            self.pg_ctl("-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def start_postgres() -> PostgresServer:
    """initdb and start a server; raises RuntimeError (with the reason) when it cannot."""
    pg_bin = find_pg_bin()
    if pg_bin is None:
        raise RuntimeError("no PostgreSQL server binaries (initdb) on this machine")
    workdir = Path(tempfile.mkdtemp(prefix="hivebus-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        if runuser is None:
            raise RuntimeError("running as root without runuser: cannot start PostgreSQL")
        as_user = [runuser, "-u", "postgres", "--"]
        shutil.chown(workdir, "postgres", "postgres")
    server = PostgresServer(pg_bin, workdir, free_port(), as_user)
    subprocess.run([*as_user, str(pg_bin / "initdb"), "-D", str(workdir / "data"), "-U", "postgres",
                    "-A", "trust", "-E", "UTF8", "--no-sync"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
    options = (f"-p {server.port} -k {workdir} -c listen_addresses=127.0.0.1 -c fsync=off "
               "-c synchronous_commit=off -c full_page_writes=off")
    try:
        server.pg_ctl("-o", options, "-l", str(workdir / "log"), "-w", "start")
    except subprocess.CalledProcessError:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return server
