"""Throwaway local servers for tests, benchmarks and local runs (no Docker needed).

PostgreSQL comes from the distribution's packages. `initdb` refuses to run as root, so when
we are root the cluster is created and run as the unprivileged `postgres` user. Every server
listens on 127.0.0.1 on a free port and lives in a temporary folder removed on stop.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bin() -> Path:
    """The newest PostgreSQL server binaries installed (Debian layout, or PG_BIN)."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name))
    if not found:
        which = shutil.which("initdb")
        if which:
            return Path(which).resolve().parent
        raise RuntimeError("PostgreSQL server binaries not found; run scripts/setup.sh")
    return Path(found[-1]).parent


def _as_user() -> list[str]:
    """Command prefix that drops root to the postgres user (initdb refuses root)."""
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", "postgres", "--"]


class PostgresServer:
    """A PostgreSQL cluster with wal_level=logical, trust auth on loopback."""

    def __init__(self, settings: dict[str, str] | None = None):
        self.bin = postgres_bin()
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="crud-pg-"))
        self.data = self.root / "data"
        self.settings = {
            "wal_level": "logical",
            "max_replication_slots": "10",
            "max_wal_senders": "10",
            "fsync": "off",
            "full_page_writes": "off",
            **(settings or {}),
        }
        self.superuser = "postgres"

    @property
    def psql(self) -> str:
        candidate = self.bin / "psql"
        return str(candidate) if candidate.exists() else "psql"

    def dsn(self, dbname: str = "postgres", user: str | None = None) -> str:
        return (f"host=127.0.0.1 port={self.port} dbname={dbname} "
                f"user={user or self.superuser}")

    def start(self) -> PostgresServer:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        subprocess.run(
            [*_as_user(), str(self.bin / "initdb"), "-D", str(self.data), "-U", self.superuser,
             "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"],
            check=True, capture_output=True,
        )
        self._pg_ctl_start()
        return self

    def _pg_ctl_start(self) -> None:
        options = " ".join(f"-c {k}={v}" for k, v in self.settings.items())
        subprocess.run(
            [*_as_user(), str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60",
             "-l", str(self.root / "server.log"),
             "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 {options}",
             "start"],
            check=True, capture_output=True,
        )

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(
            [*_as_user(), str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w",
             "stop"],
            capture_output=True,
        )

    def restart(self) -> None:
        self.stop()
        self._pg_ctl_start()

    def cleanup(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def run_psql(self, dbname: str, *args: str, env: dict[str, str] | None = None,
                 cwd: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run psql as the superuser; returns the completed process (never raises)."""
        return subprocess.run(
            [self.psql, "-X", "-v", "ON_ERROR_STOP=1", "-d", self.dsn(dbname), *args],
            capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=cwd,
        )

    def create_database(self, name: str) -> None:
        done = self.run_psql("postgres", "-c", f'CREATE DATABASE "{name}"')
        if done.returncode:
            raise RuntimeError(done.stderr)

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.run_psql("postgres", "-c", "SELECT 1").returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError("PostgreSQL did not become ready")
