"""`make dev`: the local run regenerates on an edit of the .proto and applies only the
difference; the change shows in the database and on the SSE stream while PostgreSQL, the
relay and the gateway's master keep running."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import jwt
import psycopg
import pytest

from protoc_gen_crud.devloop import difference
from protoc_gen_crud.devstack import _running_in_group

from .support import EXAMPLES_DIR, call, started_dev_loop
from .test_realtime import ADMIN, SseClient, token


def test_difference_names_the_parts_to_reload():
    old = {"migrations/0100_a.sql": "x", "openresty/nginx.conf": "y", "relay/relay.json": "z"}
    assert difference(old, dict(old)).files == ()
    change = difference(old, {**old, "migrations/0100_a.sql": "x2"})
    assert (change.migrations, change.gateway, change.relay) == (True, False, False)
    change = difference(old, {**old, "openresty/lua/crud_gateway.lua": "new"})
    assert (change.migrations, change.gateway, change.relay) == (False, True, False)


def test_editing_the_proto_reaches_database_and_stream(test_host, pg, redis_server, recording,
                                                       tmp_path):
    """PostgREST is the stand-in of the other tests (recording), as no binary exists here."""
    loop = started_dev_loop("product.proto", tmp_path, test_host, pg, redis_server,
                            "dev_loop")
    source = loop.source
    try:
        stack = loop.stack
        relay_pid, gateway_pid = stack.relay.process.pid, stack.gateway.process.pid
        postmaster = pg.run_psql("postgres", "-Atc", "SELECT pg_postmaster_start_time()").stdout
        client = SseClient("/stream/sse/product")
        assert client.status == 200
        # The reference page, with Swagger UI from scripts/setup.sh's npm install.
        assert call(test_host, "GET", "/api/v1/docs").status == 200
        asset = call(test_host, "GET", "/api/v1/docs/assets/swagger-ui-bundle.js")
        assert asset.status == 200 and b"SwaggerUIBundle" in asset.body

        text = source.read_text()
        last_brace = text.rstrip().rfind("}")
        number = 1 + max(int(n) for n in __import__("re").findall(r"= (\d+)[;\s\[]", text))
        source.write_text(text[:last_brace] + f"  optional string colour = {number};\n}}\n")
        os.utime(source, (time.time() + 5, time.time() + 5))
        change = loop.poll()
        assert change is not None and change.migrations, change
        # The page's README lists the new column once the gateway's new workers answer
        # (`nginx -s reload` returns before they start).
        deadline = time.monotonic() + 10
        while b"colour" not in call(test_host, "GET", "/api/v1/docs/README.md").body:
            assert time.monotonic() < deadline, "the reloaded gateway serves the old README"
            time.sleep(0.1)

        with psycopg.connect(pg.dsn("dev_loop"), autocommit=True) as conn:
            columns = {r[0] for r in conn.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = 'product'").fetchall()}
            assert "colour" in columns
            conn.execute("INSERT INTO product (name, price, colour) VALUES ('Pen', 2, 'blue')")
        got = client.events(1, timeout=10)
        client.close()
        if not got:
            # The reload ended the stream on the old worker (within a second, issue 16): as
            # an EventSource does, reconnect with the last id, to the new workers.
            assert client.closed and client.last_id
            again = SseClient("/stream/sse/product", {"Last-Event-ID": client.last_id,
                                                      "Authorization": f"Bearer {token(ADMIN)}"})
            got = again.events(1, timeout=10)
            again.close()
        (event,) = got
        assert event[1]["colour"] == "blue" and event[1]["action"] == "I"

        assert stack.relay.process.pid == relay_pid and stack.relay.process.poll() is None
        assert stack.gateway.process.pid == gateway_pid
        assert pg.run_psql("postgres", "-Atc",
                           "SELECT pg_postmaster_start_time()").stdout == postmaster

        # A mistake is reported and changes nothing.
        before = dict(loop.files)
        source.write_text(source.read_text().replace("optional string colour",
                                                     "optional strin colour"))
        os.utime(source, (time.time() + 10, time.time() + 10))
        assert loop.poll() is None and loop.files == before
    finally:
        loop.stop()


def _wait_running(process: subprocess.Popen) -> str:
    """crud-dev's stderr until it says it runs (two minutes at most); what it printed."""
    seen = ""
    deadline = time.monotonic() + 120
    while "running in network namespace" not in seen:
        assert time.monotonic() < deadline and process.poll() is None, seen
        ready, _, _ = select.select([process.stderr], [], [], 1)
        if ready:
            seen += process.stderr.readline()
    return seen


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP],
                         ids=["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_signal_stops_everything_make_dev_started(signal_number, open_tmp):
    """Ctrl-C, SIGTERM (timeout, systemd) and SIGHUP (a closed terminal) stop `crud-dev`
    cleanly: every process in its network namespace (PostgreSQL, Redis, the relay, nginx,
    the GraphQL server) is gone afterwards, and so is the namespace."""
    name = f"crudsig{os.getpid()}{int(signal_number)}"
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "crud-dev"),
         str(EXAMPLES_DIR / "product" / "product.textproto"), "-o", str(open_tmp / "out")],
        env={**os.environ, "CRUD_DEV_NETNS": name}, stderr=subprocess.PIPE, text=True)
    try:
        seen = _wait_running(process)
        pids = {int(p) for p in subprocess.run(["ip", "netns", "pids", name], capture_output=True,
                                               text=True, check=True).stdout.split()}
        assert len(pids) >= 4, seen  # postgres (and its workers), redis, relay, nginx, node
        process.send_signal(signal_number)
        assert process.wait(60) == 0
        rest = process.stderr.read()
        assert "crud-dev: stopped" in rest, rest
        assert name not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                          text=True).stdout
        alive = []
        for pid in pids:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except (ProcessLookupError, FileNotFoundError):
                continue
            # A zombie has ended; reaping it is its parent's (or PID 1's) business.
            if "\nState:\tZ" not in status:
                alive.append((pid, Path(f"/proc/{pid}/cmdline").read_bytes()[:200]))
        assert alive == []
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)


def test_a_second_make_dev_says_one_is_running(open_tmp):
    """While one crud-dev runs, a second one with the same namespace says so and exits,
    instead of failing on ports; the first keeps running."""
    tmp_path = open_tmp
    name = f"crudtwo{os.getpid()}"
    env = {**os.environ, "CRUD_DEV_NETNS": name}
    argv = [str(Path(sys.executable).parent / "crud-dev"),
            str(EXAMPLES_DIR / "product" / "product.textproto")]
    first = subprocess.Popen([*argv, "-o", str(tmp_path / "one")], env=env,
                             stderr=subprocess.PIPE, text=True)
    try:
        _wait_running(first)
        second = subprocess.run([*argv, "-o", str(tmp_path / "two")], env=env,
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert f"already running: network namespace {name}" in second.stderr, second.stderr
        assert not (tmp_path / "two").exists()
        assert first.poll() is None
        first.send_signal(signal.SIGTERM)
        assert first.wait(60) == 0
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)


def _start_dev(argv: list[str], env: dict[str, str]) -> subprocess.Popen:
    # Its own session, like a shell's job: a terminal's Ctrl-C (SIGINT) and hang-up (SIGHUP)
    # reach the whole foreground process group, not crud-dev alone.
    process = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    _wait_running(process)
    return process


def test_make_dev_keeps_its_data_across_restarts_until_fresh(open_tmp):
    """The database lives in .crud-dev/<output> beside the output folder: rows created
    through the GraphQL API are still there after a stop by Ctrl-C (SIGINT to the process
    group, as a terminal sends it), by a closed terminal (SIGHUP to the group) and by SIGTERM
    (to crud-dev, as `timeout` sends it), each followed by a new start; --fresh starts over
    with an empty database."""
    from protoc_gen_crud.devstack import NetNamespace

    tmp_path = open_tmp
    name = f"crudkeep{os.getpid()}"
    env = {**os.environ, "CRUD_DEV_NETNS": name, "PGRST_JWT_SECRET": "k" * 32}
    argv = [str(Path(sys.executable).parent / "crud-dev"),
            str(EXAMPLES_DIR / "product" / "product.textproto"), "-o", str(tmp_path / "out")]
    token = jwt.encode({"sub": "dev", "role": "authenticated", "exp": int(time.time()) + 600},
                       "k" * 32, algorithm="HS256")
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    netns = NetNamespace(name)

    def graphql(query: str) -> dict:
        return call(netns, "POST", "/api/v1/graphql", headers=headers,
                    body=json.dumps({"query": query})).json()

    def names() -> list[str]:
        reply = graphql("{ products(orderBy: NAME_ASC) { nodes { name } } }")
        return [n["name"] for n in reply["data"]["products"]["nodes"]]

    def create(product: str) -> None:
        made = graphql(f'mutation {{ createProduct(input: {{product: {{name: "{product}", '
                       'price: "1"}}) { product { name } } }')
        assert made["data"]["createProduct"]["product"] == {"name": product}, made

    def stop(process: subprocess.Popen, how: signal.Signals, group: bool) -> None:
        if group:
            os.killpg(process.pid, how)
        else:
            process.send_signal(how)
        assert process.wait(60) == 0
        rest = process.stderr.read()
        assert "crud-dev: stopped" in rest, rest

    process = None
    try:
        process = _start_dev(argv, env)
        before = names()
        create("Kept lamp")
        stop(process, signal.SIGINT, group=True)
        assert (tmp_path / ".crud-dev" / "out" / "postgres").is_dir()

        process = _start_dev(argv, env)
        assert names() == sorted([*before, "Kept lamp"])
        create("Kept desk")
        stop(process, signal.SIGHUP, group=True)

        process = _start_dev(argv, env)
        assert names() == sorted([*before, "Kept lamp", "Kept desk"])
        create("Kept chair")
        stop(process, signal.SIGTERM, group=False)

        process = _start_dev(argv, env)
        assert names() == sorted([*before, "Kept lamp", "Kept desk", "Kept chair"])
        stop(process, signal.SIGTERM, group=False)

        process = _start_dev([*argv, "--fresh"], env)
        assert names() == before
        stop(process, signal.SIGTERM, group=False)
    finally:
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)


def test_make_dev_restarts_what_crashed(test_host, pg, redis_server, recording, tmp_path):
    """kill -9 of the relay during a burst and of the GraphQL server: the next poll restarts
    them (new processes), the relay resumes from its slot so the SSE subscriber gets every
    row of the burst once, and GraphQL answers again."""
    loop = started_dev_loop("product.textproto", tmp_path, test_host, pg, redis_server,
                            "dev_sup")
    try:
        stack = loop.stack
        client = SseClient("/stream/sse/product")
        assert client.status == 200
        with psycopg.connect(pg.dsn("dev_sup"), autocommit=True) as conn:
            for i in range(20):
                conn.execute("INSERT INTO product (name, price) VALUES (%s, 1)", (f"b{i}",))
            relay_pid = stack.relay.process.pid
            stack.relay.kill(9)
            for i in range(20, 40):
                conn.execute("INSERT INTO product (name, price) VALUES (%s, 1)", (f"b{i}",))
        assert loop.supervise() == ["relay"]
        assert stack.relay.process.pid != relay_pid and stack.relay.process.poll() is None
        events = client.events(40, timeout=30)
        client.close()
        assert sorted(e[1]["name"] for e in events) == sorted(f"b{i}" for i in range(40))

        assert loop.graphql is not None
        loop.graphql.process.kill()
        loop.graphql.process.wait(10)
        assert loop.supervise() == ["graphql"]
        token = jwt.encode({"sub": "d", "role": "authenticated",
                            "exp": int(time.time()) + 600}, "d" * 32, algorithm="HS256")
        reply = call(test_host, "POST", "/api/v1/graphql",
                     headers={"Content-Type": "application/json",
                              "Authorization": f"Bearer {token}"},
                     body=json.dumps({"query": "{ products { totalCount } }"}))
        assert reply.json()["data"]["products"]["totalCount"] >= 40
        assert loop.supervise() == []
    finally:
        loop.stop()


def _health(netns) -> tuple[int, dict]:
    reply = call(netns, "GET", "/health")
    return reply.status, reply.json()


def _wait_health(netns, status: int, timeout: float = 60) -> dict:
    """The gateway's /health once it answers `status` (it follows the parts within seconds:
    the relay's heartbeat key expires after ALIVE_SECONDS); its body."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = _health(netns)
        except OSError as problem:  # the gateway itself is restarting
            got = (0, {"error": str(problem)})
        if got[0] == status:
            return got[1]
        assert time.monotonic() < deadline, got
        time.sleep(0.2)


def test_health_names_the_part_that_is_down(test_host, pg, redis_server, recording, tmp_path):
    """/health is 200 with every part up; kill -9 of the relay makes it 503 naming the relay
    (and only it), and 200 again once supervise() restarted it; the same for Redis (the relay,
    which cannot write without it, is reported down too). /live stays 200 throughout."""
    loop = started_dev_loop("product.textproto", tmp_path, test_host, pg, redis_server,
                            "dev_health")
    try:
        stack = loop.stack
        assert loop.graphql is not None
        body = _wait_health(test_host, 200)
        assert body == {"status": "ok", "parts": {"api": "up", "graphql": "up", "redis": "up",
                                                   "relay": "up"}}

        stack.relay.kill(9)
        body = _wait_health(test_host, 503)
        assert body == {"status": "degraded", "parts": {"api": "up", "graphql": "up",
                                                         "redis": "up", "relay": "down"}}
        assert call(test_host, "GET", "/live").status == 200
        assert loop.supervise() == ["relay"]
        assert _wait_health(test_host, 200)["parts"]["relay"] == "up"

        redis_server.kill(9)
        body = _wait_health(test_host, 503)
        assert body["parts"]["redis"] == "down" and body["parts"]["relay"] == "down", body
        assert body["parts"]["api"] == "up" and body["parts"]["graphql"] == "up", body
        assert call(test_host, "GET", "/live").status == 200
        assert loop.supervise() == ["redis"]
        assert _wait_health(test_host, 200)["status"] == "ok"
    finally:
        loop.stop()


class _Follower:
    """An EventSource: follows a stream, and when the server ends it (or the gateway is
    gone) reconnects with the last id it saw (Last-Event-ID), as a browser would."""

    def __init__(self, path: str):
        self.path, self.got, self.reconnects = path, [], 0
        self.client = SseClient(path)
        assert self.client.status == 200

    def collect(self, count: int, timeout: float = 60) -> list[tuple[str, dict]]:
        deadline = time.monotonic() + timeout
        while len(self.got) < count and time.monotonic() < deadline:
            self.got += self.client.events(count - len(self.got), timeout=1)
            if self.client.closed:
                self._reconnect(deadline)
        return self.got

    def _reconnect(self, deadline: float) -> None:
        last = self.client.last_id
        self.client.close()
        while True:
            headers = {"Authorization": f"Bearer {token(ADMIN)}"}
            if last:
                headers["Last-Event-ID"] = last
            try:
                client = SseClient(self.path, headers)
                if client.status == 200:
                    self.client, self.reconnects = client, self.reconnects + 1
                    return
                client.close()
            except OSError:
                pass
            assert time.monotonic() < deadline, "the stream did not come back"
            time.sleep(0.2)

    def close(self) -> None:
        self.client.close()


def test_make_dev_restarts_redis_and_nginx(test_host, pg, redis_server, recording, tmp_path):
    """kill -9 of Redis, then of nginx's master, each during an insert burst with an SSE
    subscriber: the next supervise() restarts it; the relay resumes, and the subscriber —
    reconnecting with Last-Event-ID when its stream ended — gets every row once."""
    loop = started_dev_loop("product.textproto", tmp_path, test_host, pg, redis_server,
                            "dev_sup2")
    follower = None
    try:
        stack = loop.stack
        follower = _Follower("/stream/sse/product")
        with psycopg.connect(pg.dsn("dev_sup2"), autocommit=True) as conn:
            def burst(first: int, last: int) -> None:
                for i in range(first, last):
                    conn.execute("INSERT INTO product (name, price) VALUES (%s, 1)", (f"r{i}",))

            burst(0, 20)
            redis_pid = redis_server.process.pid
            redis_server.kill(9)
            burst(20, 40)
            assert loop.supervise() == ["redis"]
            assert redis_server.process.pid != redis_pid
            events = follower.collect(40)
            assert sorted(e[1]["name"] for e in events) == sorted(f"r{i}" for i in range(40))

            burst(40, 60)
            master = stack.gateway.process.pid
            workers = [p for p in _running_in_group(master) if p != master]
            assert workers
            before = follower.reconnects
            stack.gateway.process.kill()
            stack.gateway.process.wait(10)
            burst(60, 80)
            assert loop.supervise() == ["gateway"]
            assert stack.gateway.process.pid != master
            # The killed master's workers are gone too (not left serving the old state).
            assert _running_in_group(master) == []
            events = follower.collect(80)
        assert follower.reconnects > before
        assert sorted(e[1]["name"] for e in events) == sorted(f"r{i}" for i in range(80))
        # Nothing more arrives: no row was sent twice.
        assert follower.client.events(1, timeout=2) == []
        assert loop.supervise() == []
    finally:
        if follower is not None:
            follower.close()
        loop.stop()
