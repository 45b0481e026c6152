"""End to end: rows change in PostgreSQL, SSE clients of the generated gateway see each change.

Real PostgreSQL (wal_level=logical), real Redis, crud-relay and the generated gateway on real
nginx, brought up by the LocalStack launcher. Expected events come from the statements
themselves (the changed rows as PostgREST writes them: to_jsonb of the row read through the
wire domains' json casts), not from the relay.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import time
from collections.abc import Callable
from urllib.parse import quote

import psycopg
import pytest

from protoc_gen_crud.devstack import LocalStack
from protoc_gen_crud.targets import openresty, relay

from . import postgrest_sql as rest
from .support import EXAMPLES, EXAMPLES_DIR, call, from_textproto, write_tree

# Per example: (entity, statement) in execution order. Each statement returns the changed
# rows as `row` (to_jsonb of the table row).
SCRIPTS: dict[str, list[tuple[str, str]]] = {
    "product": [
        ("product", "INSERT INTO product (name, price, category) VALUES ('Laptop', 999.99, "
                    "'Electronics'), ('Book', 12.5, 'Books') RETURNING to_jsonb(product)"),
        ("product", "UPDATE product SET price = 10, category = NULL WHERE name = 'Book' "
                    "RETURNING to_jsonb(product)"),
        ("product", "DELETE FROM product WHERE name = 'Laptop' RETURNING to_jsonb(product)"),
    ],
    "order": [
        ("order", "INSERT INTO \"order\" (customer_email, total_amount, status) VALUES "
                  "('a@b.c', 10.5, 'pending') RETURNING to_jsonb(\"order\")"),
        ("order", "UPDATE \"order\" SET status = 'paid' RETURNING to_jsonb(\"order\")"),
        ("order", "DELETE FROM \"order\" RETURNING to_jsonb(\"order\")"),
    ],
    "article": [
        ("article", "INSERT INTO article (title, tags, published) VALUES ('Hello', "
                    "'[\"intro\", \"news\"]', true) RETURNING to_jsonb(article)"),
        ("article", "UPDATE article SET content = 'Body text' RETURNING to_jsonb(article)"),
        ("article", "DELETE FROM article RETURNING to_jsonb(article)"),
    ],
    "sensor_reading": [
        ("sensor_reading", "INSERT INTO sensor_reading (device_id, temperature, humidity, "
                           "location) VALUES ('d1', 21.5, 40, '{\"room\": \"lab\"}'), "
                           "('d2', -3.25, NULL, NULL) RETURNING to_jsonb(sensor_reading)"),
        ("sensor_reading", "UPDATE sensor_reading SET temperature = temperature + 1 "
                           "WHERE device_id = 'd1' RETURNING to_jsonb(sensor_reading)"),
        ("sensor_reading", "DELETE FROM sensor_reading WHERE device_id = 'd2' "
                           "RETURNING to_jsonb(sensor_reading)"),
    ],
    "storefront": [
        ("customer", "INSERT INTO shop.customer (email, name, user_id) VALUES "
                     "('a@x.io', 'Alice', 'alice'), ('b@x.io', 'Bob', 'bob') "
                     "RETURNING to_jsonb(customer)"),
        ("product", "UPDATE shop.product SET stock = 7, tags = '{new,\"a b\"}' "
                    "WHERE sku = 'LAP-1' RETURNING to_jsonb(product)"),
        ("order_items", "INSERT INTO shop.order_items (product_id, quantity, price) "
                        "SELECT id, 2, price FROM shop.product WHERE sku = 'LAP-1' "
                        "RETURNING to_jsonb(order_items)"),
        ("product", "DELETE FROM shop.product WHERE sku = 'BK-2' RETURNING to_jsonb(product)"),
        ("customer", "UPDATE shop.customer SET tier = 'TIER_GOLD' WHERE user_id = 'bob' "
                     "RETURNING to_jsonb(customer)"),
    ],
    "pipelines": [
        ("metric", "INSERT INTO metric (device, temperature, amount, price, note) VALUES "
                   "('a', 20.5, 3, 9.99, 'x'), ('b', NULL, NULL, NULL, NULL) "
                   "RETURNING to_jsonb(metric)"),
        ("metric", "UPDATE metric SET amount = 4 WHERE device = 'a' RETURNING to_jsonb(metric)"),
        ("metric", "DELETE FROM metric WHERE device = 'b' RETURNING to_jsonb(metric)"),
    ],
}
ACTIONS = {"INSERT": "I", "UPDATE": "U", "DELETE": "D"}
ADMIN = {"sub": "root", "role": "admin"}
# Per example: an insert of two rows, made unique by {tag}, for the resume test.
INSERTS = {
    "product": ("product", "INSERT INTO product (name, price) VALUES ('{tag} a', 1), "
                           "('{tag} b', 2) RETURNING to_jsonb(product)"),
    "order": ("order", "INSERT INTO \"order\" (customer_email, total_amount) VALUES "
                       "('{tag}@a.b', 1), ('{tag}@c.d', 2) RETURNING to_jsonb(\"order\")"),
    "article": ("article", "INSERT INTO article (title) VALUES ('{tag} a'), ('{tag} b') "
                           "RETURNING to_jsonb(article)"),
    "sensor_reading": ("sensor_reading", "INSERT INTO sensor_reading (device_id) VALUES "
                                         "('{tag} a'), ('{tag} b') "
                                         "RETURNING to_jsonb(sensor_reading)"),
    "storefront": ("customer", "INSERT INTO shop.customer (email, name, user_id) VALUES "
                               "('{tag}@a.b', 'A', 'alice'), ('{tag}@c.d', 'B', 'bob') "
                               "RETURNING to_jsonb(customer)"),
    "pipelines": ("metric", "INSERT INTO metric (note) VALUES ('{tag} a'), ('{tag} b') "
                            "RETURNING to_jsonb(metric)"),
}


class SseClient:
    """A minimal EventSource: HTTP/1.0 GET, parses `id:`/`data:` events and comments.

    By default it sends an admin's token, which sees every row; owner filtering has its own
    test."""

    def __init__(self, path: str, headers: dict[str, str] | None = None,
                 receive_buffer: int | None = None):
        if headers is None:
            headers = {"Authorization": f"Bearer {token(ADMIN)}"}
        if receive_buffer is None:
            self.sock = socket.create_connection(("127.0.0.1", 80), timeout=10)
        else:
            # Set before connecting, so the window the server sees stays this small: a
            # client that does not read soon stops the server's writes to it.
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            self.sock.settimeout(10)
            self.sock.connect(("127.0.0.1", 80))
        lines = [f"GET {path} HTTP/1.0", "Host: localhost", "Accept: text/event-stream"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        self.status = int(head.split()[1])
        self.headers = {k.lower(): v.strip() for k, _, v in
                        (line.partition(":") for line in head.decode().split("\r\n")[1:])}
        self.comments = 0
        # What an EventSource keeps: the last `id:` of any block (an id-only block included,
        # as the gateway sends first) and the `retry:` asked for; `closed` once the server
        # ended the response.
        self.last_id: str | None = None
        self.retry: int | None = None
        self.closed = False

    def events(self, count: int, timeout: float = 10) -> list[tuple[str, dict]]:
        """The next `count` events (fewer if the timeout passes first): (id, data)."""
        return [(event_id, data) for event_id, _, data in self.blocks(count, timeout)]

    def blocks(self, count: int, timeout: float = 10,
               keep: Callable[[str | None, dict | None], bool] = lambda _id, data: data is not None,
               ) -> list[tuple[str | None, str | None, dict | None]]:
        """The next `count` blocks that `keep(id, data)` keeps (by default those with data,
        which an EventSource dispatches), each as (id, event name, data)."""
        found: list[tuple[str | None, str | None, dict | None]] = []
        deadline = time.monotonic() + timeout
        while len(found) < count and time.monotonic() < deadline:
            while b"\n\n" in self.buffer and len(found) < count:
                block, _, self.buffer = self.buffer.partition(b"\n\n")
                event_id = event = data = None
                for line in block.decode().split("\n"):
                    if line.startswith(":"):
                        self.comments += 1
                    elif line.startswith("id: "):
                        event_id = self.last_id = line[4:]
                    elif line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("retry: "):
                        self.retry = int(line[7:])
                    elif line.startswith("data: "):
                        data = json.loads(line[6:])
                if keep(event_id, data):
                    found.append((event_id, event, data))
            if len(found) >= count:
                break
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                self.closed = True
                break
            self.buffer += chunk
        return found

    def close(self) -> None:
        self.sock.close()


def token(claims: dict) -> str:
    """An unsigned JWT-shaped token; the stand-in PostgREST accepts it, the gateway reads
    its claims (signature checks are PostgREST's job, not covered here)."""
    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")
    return f"{part({'alg': 'HS256'})}.{part(claims)}.signature"


@pytest.fixture(scope="module", params=EXAMPLES)
def stack(request, test_host, pg, redis_server, recording, tmp_path_factory):
    name = request.param
    generated = write_tree(from_textproto(EXAMPLES_DIR / name / f"{name}.textproto"),
                           tmp_path_factory.mktemp(name))
    running = LocalStack(generated, test_host, pg, redis_server, f"rt_{name}",
                         env={"CRUD_SSE_HEARTBEAT_MS": "500"}).up()
    try:
        yield name, running
    finally:
        running.down()


def execute(stack: LocalStack, sql: str) -> list[dict]:
    """Run a statement `... RETURNING to_jsonb(<table>)`; the changed rows as the API writes
    them: through the wire domains' json casts, as PostgREST applies them (postgrest_sql)."""
    returning = re.search(r" RETURNING to_jsonb\((\"?\w+\"?)\)$", sql)
    target = re.match(r"(?:INSERT INTO|UPDATE|DELETE FROM) ([\w.\"]+)", sql)
    assert returning and target, sql
    with psycopg.connect(stack.pg.dsn(stack.database), autocommit=True) as conn:
        schema, table = conn.execute(
            "SELECT relnamespace::regnamespace::text, relname::text FROM pg_class "
            "WHERE oid = to_regclass(%s)", (target.group(1),)).fetchone()
        shape = rest.shape(conn, schema.strip('"'), table)
        statement = sql[:returning.start()] + " RETURNING *"
        wrapped = (f"WITH pgrst_source AS ({statement}) SELECT to_jsonb(_t) FROM "
                   f"(SELECT {rest.select_list(shape, 'pgrst_source')} FROM pgrst_source) _t")
        return [row[0] for row in conn.execute(wrapped).fetchall()]


def expected_events(stack: LocalStack, script) -> dict[str, list[tuple[str, dict]]]:
    """Run the script; per entity, the (action, row) of each change in commit order."""
    expected: dict[str, list[tuple[str, dict]]] = {}
    for entity, sql in script:
        action = ACTIONS[sql.split()[0]]
        for row in execute(stack, sql):
            expected.setdefault(entity, []).append((action, row))
    return expected


@pytest.mark.one_major
def test_every_change_reaches_sse_once_in_commit_order(stack):
    name, running = stack
    entities = sorted({entity for entity, _ in SCRIPTS[name]})
    clients = {e: SseClient(f"/stream/sse/{e}") for e in entities}
    try:
        for client in clients.values():
            assert client.status == 200
            assert client.headers["content-type"] == "text/event-stream"
        expected = expected_events(running, SCRIPTS[name])
        for entity, changes in expected.items():
            received = clients[entity].events(len(changes) + 1, timeout=3)
            assert len(received) == len(changes), (entity, received)
            ids = [event_id for event_id, _ in received]
            assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
            for (action, row), (_, data) in zip(changes, received, strict=True):
                assert (data["table_name"], data["action"]) == (entity, action)
                for column, value in row.items():
                    assert data[column] == value, (entity, action, column)
                if action == "U":
                    assert set(data["old"]) == set(row)
    finally:
        for client in clients.values():
            client.close()


@pytest.mark.one_major
def test_resume_with_last_event_id(stack):
    name, running = stack
    entity, insert = INSERTS[name]
    first = SseClient(f"/stream/sse/{entity}")
    seen = first.events(2, timeout=0.2) + first.events(0)
    assert seen == []
    expected_events(running, [(entity, insert.format(tag="before"))])
    seen = first.events(2, timeout=3)
    first.close()
    assert len(seen) == 2
    last = seen[-1][0]
    # While nobody listens, more changes happen.
    missed = expected_events(running, [(entity, insert.format(tag="while-away"))])[entity]
    for how in ("header", "query"):
        if how == "header":
            again = SseClient(f"/stream/sse/{entity}", {"Last-Event-ID": last,
                                                        "Authorization": f"Bearer {token(ADMIN)}"})
        else:
            again = SseClient(f"/stream/sse/{entity}?last_event_id={last}")
        got = again.events(len(missed) + 1, timeout=2)
        again.close()
        assert [d["action"] for _, d in got] == [a for a, _ in missed], how
        assert [d["id"] for _, d in got] == [row["id"] for _, row in missed], how
        assert all(tuple(map(int, i.split("-"))) > tuple(map(int, last.split("-")))
                   for i, _ in got)


def published(running: LocalStack, entity: str, sql: str) -> list[tuple[str, dict]]:
    """Run the statement and wait until the relay has put its changes on the Redis stream."""
    client = running.redis.client()
    before = client.xlen(relay.topic(entity))
    changes = expected_events(running, [(entity, sql)])[entity]
    deadline = time.monotonic() + 10
    while client.xlen(relay.topic(entity)) < before + len(changes):
        assert time.monotonic() < deadline, "the relay did not publish"
        time.sleep(0.05)
    return changes


def opening(client: SseClient) -> re.Match:
    """The stream's first block, as bytes come: `retry:` and the position, nothing else."""
    while b"\n\n" not in client.buffer:
        chunk = client.sock.recv(65536)
        assert chunk, client.buffer
        client.buffer += chunk
    found = re.fullmatch(r"retry: (\d+)\nid: (\d+-\d+)", client.buffer.decode().split("\n\n")[0])
    assert found, client.buffer
    return found


@pytest.mark.parametrize("stack", ["product"], indirect=True)
def test_every_stream_gives_its_position_from_the_first_byte(stack):
    """A client cut off before its first event still has a position: the first bytes are
    `retry:` (jittered per connection) and the id reading starts after, so a reconnect with
    it gets exactly what was committed meanwhile (issue 16: three rows were lost)."""
    _, running = stack
    entity, insert = INSERTS["product"]
    published(running, entity, insert.format(tag="position-before"))
    redis = running.redis.client()
    newest = [e[0].decode() for e in redis.xrevrange(relay.topic(entity), count=2)]
    low, high = openresty.SSE_RETRY_MS
    retries, position = set(), None
    for _ in range(6):
        client = SseClient(f"/stream/sse/{entity}")
        found = opening(client)
        client.close()
        assert low <= int(found[1]) <= high
        assert found[2] == newest[0]
        retries.add(int(found[1]))
        position = found[2]
    assert len(retries) > 1, "the same retry for every connection: no jitter"
    # The other starting points: everything, the last event only, a resumed id.
    for query, headers, wanted in (("?history=all", {}, "0-0"), ("?history=1", {}, newest[1]),
                                   ("", {"Last-Event-ID": newest[1]}, newest[1])):
        client = SseClient(f"/stream/sse/{entity}{query}",
                           {"Authorization": f"Bearer {token(ADMIN)}", **headers})
        assert opening(client)[2] == wanted, query or headers
        client.close()
    # Only the position was read; rows are committed while the client is away.
    missed = published(running, entity, insert.format(tag="position-missed"))
    again = SseClient(f"/stream/sse/{entity}", {"Last-Event-ID": position,
                                                "Authorization": f"Bearer {token(ADMIN)}"})
    got = again.events(len(missed) + 1, timeout=2)
    again.close()
    assert [(d["action"], d["id"]) for _, d in got] == [("I", row["id"]) for _, row in missed]


@pytest.mark.parametrize("stack", ["product"], indirect=True)
def test_a_reload_ends_open_streams_and_they_resume_on_the_new_workers(stack):
    """`nginx -s reload`: the old worker's stream ends by itself after its current read (one
    heartbeat, 0.5 s here), well before worker_shutdown_timeout would cut it, and the client,
    reconnecting with the last id it got, receives every change made meanwhile once."""
    _, running = stack
    entity, insert = INSERTS["product"]
    client = SseClient(f"/stream/sse/{entity}")
    assert client.events(1, timeout=0.3) == [] and client.last_id
    published(running, entity, insert.format(tag="reload-before"))
    assert len(client.events(2, timeout=3)) == 2
    started = time.monotonic()
    assert running.gateway is not None
    running.gateway.reload(running.generated / "openresty")
    during = published(running, entity, insert.format(tag="reload-during"))
    old = client.events(100, timeout=openresty.WORKER_SHUTDOWN_TIMEOUT_S + 5)
    ended = time.monotonic() - started
    client.close()
    assert client.closed, "the stream stayed open on the old worker"
    assert ended < openresty.WORKER_SHUTDOWN_TIMEOUT_S / 2, (
        f"ended after {ended:.1f} s: cut by worker_shutdown_timeout, not by the stream")
    after = published(running, entity, insert.format(tag="reload-after"))
    again = SseClient(f"/stream/sse/{entity}", {"Last-Event-ID": client.last_id or "",
                                                "Authorization": f"Bearer {token(ADMIN)}"})
    new = again.events(len(during) + len(after) + 1, timeout=2)
    again.close()
    assert [d["id"] for _, d in old + new] == [row["id"] for _, row in during + after]


@pytest.mark.one_major
def test_history_filters_and_heartbeats(stack):
    name, _ = stack
    entity = SCRIPTS[name][0][0]
    everything = SseClient(f"/stream/sse/{entity}?history=all")
    history = everything.events(1000, timeout=1.5)
    assert history and everything.comments >= 1, "heartbeat comments while idle"
    everything.close()
    last_two = SseClient(f"/stream/sse/{entity}?history=2")
    assert last_two.events(10, timeout=1) == history[-2:]
    last_two.close()
    inserts = SseClient(f"/stream/sse/{entity}?history=all&action=I")
    assert inserts.events(1000, timeout=1) == [e for e in history if e[1]["action"] == "I"]
    inserts.close()
    column = next(c for c in history[0][1] if c not in ("table_name", "action", "old")
                  and isinstance(history[0][1][c], str))
    value = history[0][1][column]
    filtered = SseClient(f"/stream/sse/{entity}?history=all&{column}=eq.{quote(value)}")
    assert filtered.events(1000, timeout=1) == [e for e in history if e[1][column] == value]
    filtered.close()


def test_read_permission_is_checked_with_postgrest(stack):
    name, _ = stack
    entity = SCRIPTS[name][0][0]
    denied = SseClient(f"/stream/sse/{entity}", {"Authorization": "Bearer forbidden"})
    assert denied.status == 403
    denied.close()
    by_cookie = SseClient(f"/stream/sse/{entity}", {"Cookie": "crud_stream_token=forbidden"})
    assert by_cookie.status == 403
    by_cookie.close()
    assert SseClient("/stream/sse/no_such_entity").status == 404


@pytest.mark.parametrize("stack", ["storefront"], indirect=True)  # the one with an owner
def test_owners_see_only_their_rows(stack):
    _, running = stack
    # Rows of its own (the module's other tests may have run on another PostgreSQL major).
    execute(running, "INSERT INTO shop.customer (email, name, user_id) VALUES "
                     "('own-a@x.io', 'Own A', 'alice'), ('own-b@x.io', 'Own B', 'bob') "
                     "ON CONFLICT (email) DO UPDATE SET name = EXCLUDED.name "
                     "RETURNING to_jsonb(customer)")
    time.sleep(0.5)  # through the relay
    events = {}
    for who, claims in {"alice": {"sub": "alice", "role": "authenticated"},
                        "admin": {"sub": "root", "role": "admin"}}.items():
        client = SseClient("/stream/sse/customer?history=all",
                           {"Authorization": f"Bearer {token(claims)}"})
        events[who] = client.events(100, timeout=1)
        client.close()
    assert events["alice"] and {d["user_id"] for _, d in events["alice"]} == {"alice"}
    assert {d["user_id"] for _, d in events["admin"]} >= {"alice", "bob"}


@pytest.mark.parametrize("stack", ["product"], indirect=True)
def test_slow_and_vanished_clients_do_not_stall_others(stack):
    _, running = stack
    stalled = socket.create_connection(("127.0.0.1", 80))
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.sendall(b"GET /stream/sse/product HTTP/1.0\r\n\r\n")  # and never reads
    vanished = SseClient("/stream/sse/product")
    vanished.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00"
                             b"\x00\x00")
    vanished.close()  # reset, gone
    reader = SseClient("/stream/sse/product")
    rows = 400
    started = time.monotonic()
    execute(running, "INSERT INTO product (name, price, category) SELECT 'bulk ' || i, i, "
                     f"repeat('x', 500) FROM generate_series(1, {rows}) i "
                     "RETURNING to_jsonb(product)")
    got = reader.events(rows, timeout=10)
    assert len(got) == rows
    assert time.monotonic() - started < 10
    reader.close()
    stalled.close()


@pytest.mark.parametrize("stack", ["pipelines"], indirect=True)
def test_ticks_move_event_time_when_idle(stack):
    """?ticks=1 (what Arroyo's source asks for) adds clock ticks while no change comes, so
    windows close on a quiet backend; ticks carry no id, so Last-Event-ID is not moved."""
    client = SseClient("/stream/sse/metric?ticks=1")
    ticks = client.events(2, timeout=3)
    client.close()
    assert len(ticks) == 2 and all(event_id is None for event_id, _ in ticks)
    first, second = (data for _, data in ticks)
    assert first["action"] == "T" and first["table_name"] == "metric"
    assert second["commit_time"] > first["commit_time"]
    plain = SseClient("/stream/sse/metric")
    assert plain.events(1, timeout=1.2) == [] and plain.comments >= 1
    plain.close()


@pytest.mark.parametrize("stack", ["storefront"], indirect=True)
def test_aggregation_results_reach_their_channel_once(stack, recording):
    """Arroyo's webhook sink posts each window's result to the gateway's internal port; a
    repeat (sink retry, replay after restart) is acknowledged but not published again."""
    _, running = stack
    client = SseClient("/stream/revenue")
    assert client.status == 200
    result = {"window_start": "2026-11-24T10:00:00Z", "window_end": "2026-11-24T10:05:00Z",
              "value": 1234.5}
    body = json.dumps(result)
    first = call(running.host, "POST", "/publish/revenue", body=body, port=9145,
                 headers={"Content-Type": "application/json"})
    again = call(running.host, "POST", "/publish/revenue", body=body, port=9145,
                 headers={"Content-Type": "application/json"})
    assert (first.status, first.json()["published"]) == (201, True)
    assert (again.status, again.json()["published"]) == (200, False)
    events = client.events(2, timeout=1.5)
    client.close()
    assert [data for _, data in events] == [result]
    assert events[0][0] == first.json()["id"]
    assert call(running.host, "POST", "/publish/nosuch", body=body, port=9145).status == 404
    assert call(running.host, "GET", "/publish/revenue", port=9145).status == 405
    assert call(running.host, "POST", "/publish/revenue", body="[1]", port=9145).status == 400
    # Only the internal port takes results; the public one has no such route.
    assert call(running.host, "POST", "/publish/revenue", body=body).status == 404
    metrics = call(running.host, "GET", "/metrics", port=9145).body.decode()
    assert 'crud_gateway_aggregates_published_total{channel="revenue"} 1' in metrics
    # The permission check is the source entity's: the stand-in PostgREST refuses the token
    # "forbidden", and the channel is refused with it.
    for path in ("/stream/revenue", "/stream/order_metrics"):
        denied = SseClient(path, headers={"Authorization": "Bearer forbidden"})
        assert denied.status == 403, path
        denied.close()
    recording.mark()
    allowed = SseClient("/stream/order_metrics")
    allowed.close()
    assert recording.one()["path"] == "/order_items"
