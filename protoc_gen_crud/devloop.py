"""`make dev`: the generated backend on this machine without Docker, reloading on change.

Starts what this machine can run (PostgreSQL, Redis, crud-relay and the gateway on nginx with
Lua, and PostgREST when a `postgrest` binary is on the PATH) in a private network namespace
where the service names of the compose stack (`crud`, `redis`, `proxy`, ...) resolve to its
loopback, so the generated files run unchanged. Then it watches the `.proto` or textproto:
each change is regenerated and only the difference is applied — migrations run (through
the ledger), the gateway reloads, the relay restarts when its configuration changed.
Nothing else restarts. Needs root (network namespaces, PostgreSQL as `postgres`).

    python -m protoc_gen_crud.devloop configs/product.textproto [-o generated]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import builder, textproto
from .cli import write_output
from .devstack import (
    GraphqlServer,
    LocalStack,
    NetNamespace,
    PostgresServer,
    RedisServer,
    TestHost,
    docs_assets,
    graphql_runtime,
)
from .diagnostics import GenerationError
from .generate import generate
from .resources import proto_include_dir


def protoc_command(include: Path, out: Path, *protos: str, parameter: str = "",
                   plugin: Path | None = None) -> list[str]:
    """protoc (grpcio-tools) running this plugin on `protos`, paths relative to `include`:
    what `buf generate` does, for the local run and the tests."""
    plugin = plugin or Path(sys.executable).parent / "protoc-gen-crud"
    option = f"--crud_out={parameter + ':' if parameter else ''}{out}"
    return [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_include_dir()}",
            f"-I{include}", f"--plugin=protoc-gen-crud={plugin}", option, *protos]


def generate_from(source: Path) -> dict[str, str]:
    """Generate from a textproto (in process) or a .proto (through protoc and the plugin)."""
    if source.suffix != ".proto":
        message, sources = textproto.load(source.read_text(encoding="utf-8"), str(source))
        return generate(builder.build(message, sources))
    with tempfile.TemporaryDirectory(prefix="crud-dev-") as out:
        done = subprocess.run(protoc_command(source.parent, Path(out), source.name),
                              cwd=source.parent, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(done.stderr.strip() or "protoc failed")
        return {str(p.relative_to(out)): p.read_text() for p in sorted(Path(out).rglob("*"))
                if p.is_file()}


@dataclass(frozen=True)
class Difference:
    """Which running parts a regeneration touches."""

    migrations: bool
    gateway: bool
    relay: bool
    files: tuple[str, ...]


def difference(old: dict[str, str], new: dict[str, str]) -> Difference:
    changed = tuple(sorted(p for p in {*old, *new} if old.get(p) != new.get(p)))
    return Difference(
        migrations=any(p.startswith("migrations/") for p in changed),
        gateway=any(p.startswith("openresty/") for p in changed),
        relay="relay/relay.json" in changed,
        files=changed,
    )


class DevLoop:
    """One source file, its generated folder, and the stack running it."""

    def __init__(self, source: Path, out: Path, host: NetNamespace, pg: PostgresServer,
                 redis: RedisServer, database: str = "crud_dev", keep: bool = False):
        self.source, self.out = source, out
        self.host, self.pg, self.redis, self.database = host, pg, redis, database
        self.keep = keep
        self.files: dict[str, str] = {}
        self.stack: LocalStack | None = None
        self.postgrest: subprocess.Popen | None = None
        self.graphql: GraphqlServer | None = None
        self.seen = 0.0

    def start(self) -> DevLoop:
        self.files = generate_from(self.source)
        write_output(self.out, self.files)
        self.seen = self.source.stat().st_mtime
        self.stack = LocalStack(self.out, self.host, self.pg, self.redis, self.database,
                                keep=self.keep).up()
        self.start_postgrest()
        self.start_graphql()
        return self

    def start_graphql(self) -> None:
        """The GraphQL API (graphql/ on Node 22), with Ruru, at <base_path>/graphql through
        the gateway; it reads the schema at start, so it restarts when migrations or its
        own files change."""
        if not (self.out / "graphql" / "server.mjs").exists():
            return
        if graphql_runtime() is None:
            log("Node 22 and PostGraphile are not installed (scripts/setup.sh --system): "
                "<base_path>/graphql answers 502")
            return
        url = f"postgres://authenticator@127.0.0.1:{self.pg.port}/{self.database}"
        env = {"PGRST_JWT_SECRET": os.environ.get("PGRST_JWT_SECRET", "d" * 32),
               "CRUD_GRAPHQL_DEV": "1"}
        try:
            self.graphql = GraphqlServer(self.host, self.out / "graphql", url, env).start()
        except RuntimeError as problem:
            self.graphql = None
            log(str(problem))

    def start_postgrest(self) -> None:
        binary = shutil.which("postgrest")
        if not binary:
            log("postgrest is not on the PATH: the API, and the read-permission check of SSE "
                "streams, answer 503 until something serves crud:3000")
            return
        env = {**os.environ, "PGRST_DB_URI": self.pg.dsn(self.database),
               "PGRST_JWT_SECRET": os.environ.get("PGRST_JWT_SECRET", "d" * 32)}
        self.postgrest = self.host.popen(binary, str(self.out / "postgrest" / "postgrest.conf"),
                                         env=env)

    def apply(self) -> Difference | None:
        """Regenerate and apply what changed; a bad edit is reported and nothing changes."""
        try:
            new = generate_from(self.source)
        except (GenerationError, RuntimeError) as problem:
            log(f"not applied:\n{problem}")
            return None
        change = difference(self.files, new)
        if not change.files:
            return change
        write_output(self.out, new)
        self.files = new
        assert self.stack is not None
        if change.migrations:
            self.stack.migrate()
            log("migrations applied")
        if change.gateway and self.stack.gateway:
            self.stack.gateway.reload(self.out / "openresty")
            log("gateway reloaded")
        if change.migrations or any(p.startswith("graphql/") for p in change.files):
            if self.graphql:
                self.graphql.stop()
            self.start_graphql()
            if self.graphql:
                log("graphql restarted")
        if change.relay and self.stack.relay:
            self.stack.start_relay()  # stops the running one first
            log("relay restarted")
        return change

    def supervise(self) -> list[str]:
        """Restart what crashed, as compose's restart policy would: Redis (its append-only
        file, fsynced every second as in compose, keeps the streams; the relay confirms a
        position only after that window, so it writes again what a kill -9 lost), the relay
        (it resumes from its replication slot, so no change is lost), the gateway (the
        workers a killed master left are ended first; SSE clients reconnect with
        Last-Event-ID), the GraphQL server. Returns what was restarted."""
        restarted = []
        stack = self.stack
        if stack is None:
            return restarted
        if self.redis.process and self.redis.process.poll() is not None:
            self.redis.start()
            restarted.append("redis")
        if stack.relay and stack.relay.process and stack.relay.process.poll() is not None:
            stack.start_relay()
            restarted.append("relay")
        if stack.gateway and stack.gateway.process and stack.gateway.process.poll() is not None:
            stack.gateway.kill_orphans()
            stack.gateway.start({"REDIS_PASSWORD": self.redis.password, **stack.env})
            stack.wait_http(80)
            restarted.append("gateway")
        if self.graphql and self.graphql.process and self.graphql.process.poll() is not None:
            self.graphql.stop()
            self.start_graphql()
            restarted.append("graphql")
        for name in restarted:
            log(f"{name} had stopped: restarted")
        return restarted

    def poll(self) -> Difference | None:
        self.supervise()
        mtime = self.source.stat().st_mtime
        if mtime == self.seen:
            return None
        self.seen = mtime
        return self.apply()

    def stop(self) -> None:
        if self.graphql:
            self.graphql.stop()
        if self.postgrest and self.postgrest.poll() is None:
            self.postgrest.terminate()
            self.postgrest.wait(10)
        if self.stack:
            self.stack.down()


def data_folder(out: Path) -> Path:
    """Where make dev keeps its database and Redis between runs: `.crud-dev/<output folder's
    name>` beside the output folder (ignored by git), so a restart keeps what was entered."""
    return out.parent / ".crud-dev" / out.name


def log(message: str) -> None:
    print(f"crud-dev: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="crud-dev", description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a .proto or crud.v1.Backend textproto")
    parser.add_argument("-o", "--out", type=Path, default=Path("generated"))
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between checks")
    parser.add_argument("--fresh", action="store_true",
                        help="start over with an empty database (deletes the data folder)")
    args = parser.parse_args(argv)
    name = os.environ.get("CRUD_DEV_NETNS", "crud-dev")
    if (Path("/run/netns") / name).exists():
        held = subprocess.run(["ip", "netns", "pids", name], capture_output=True,
                              text=True).stdout.split()
        if held:
            log(f"already running: network namespace {name} holds processes "
                f"{', '.join(held)}; stop that crud-dev first (Ctrl-C), or set CRUD_DEV_NETNS "
                "to run a second one")
            return 1
        NetNamespace(name).delete()  # left behind by a crud-dev that was killed
    # SIGTERM (timeout, systemd, process managers) and SIGHUP (a closed terminal) stop it
    # like Ctrl-C: every process it started is stopped and its namespace removed.
    def interrupted(signum, frame):
        raise KeyboardInterrupt

    for number in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, interrupted)
    host = pg = redis = loop = None
    try:
        data = data_folder(args.out.resolve())
        if args.fresh and data.exists():
            shutil.rmtree(data)
            log(f"--fresh: removed {data}")
        host = TestHost(name=name).enter()
        pg = PostgresServer(root=data / "postgres").start()
        redis = RedisServer(folder=data / "redis").start()
        pg.wait_ready()
        loop = DevLoop(args.source.resolve(), args.out.resolve(), host, pg, redis, keep=True)
        loop.start()
        log(f"running in network namespace {host.name}: sudo ip netns exec {host.name} "
            "curl http://proxy/health ; watching " + str(args.source) + f"; data in {data} "
            "(--fresh starts over)")
        if docs_assets() is None:
            log("the API reference page's Swagger UI files are not installed (run "
                "scripts/setup.sh --system): /docs says they are missing")
        for name in ("arroyo", "daprd"):
            if not shutil.which(name):
                log(f"{name} is not on the PATH: skipped")
        while True:
            time.sleep(args.poll)
            loop.poll()
    except KeyboardInterrupt:
        return 0
    finally:
        # Further signals must not cut the clean-up short.
        for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(number, signal.SIG_IGN)
        if loop is not None:
            loop.stop()
        if redis is not None:
            redis.cleanup()
        if pg is not None:
            pg.cleanup()
        if host is not None:
            host.leave()
        log("stopped")


if __name__ == "__main__":
    raise SystemExit(main())
