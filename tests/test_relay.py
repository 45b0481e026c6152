"""crud-relay's pieces: the pgoutput decoder on real server output, value conversion, the
process's operational surface (health, metrics, logs, clean shutdown), a foreign entry in a
change stream, and retention behind Dapr consumer groups with gaps announced over SSE."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from protoc_gen_crud.relay import pgoutput
from protoc_gen_crud.relay.events import Table, change_data
from protoc_gen_crud.relay.values import _timestamp, commit_iso, parse_array

from .support import from_text
from .test_realtime import ADMIN, token


def test_decoder_on_real_pgoutput(database):
    database.query("CREATE TABLE t (id int PRIMARY KEY, big text, tags text[], n numeric, "
                   "note text)")
    database.query("ALTER TABLE t REPLICA IDENTITY FULL")
    database.query("CREATE PUBLICATION p FOR TABLE t")
    database.query("SELECT pg_create_logical_replication_slot('decoder_test', 'pgoutput')")
    try:
        big = "x" * 100_000  # stored out of line (TOAST): unchanged in the update below
        with database.connect(autocommit=True) as conn:
            conn.execute("INSERT INTO t VALUES (1, %s, '{a,\"b c\",NULL}', 12.50, NULL)",
                         (big,))
            conn.execute("UPDATE t SET note = 'changed' WHERE id = 1")
            conn.execute("DELETE FROM t WHERE id = 1")
        rows = database.query(
            "SELECT data FROM pg_logical_slot_get_binary_changes('decoder_test', NULL, NULL, "
            "'proto_version', '1', 'publication_names', 'p')")
    finally:
        database.query("SELECT pg_drop_replication_slot('decoder_test')")
    messages = [pgoutput.decode(bytes(data)) for (data,) in rows]
    relation = next(m for m in messages if isinstance(m, pgoutput.Relation))
    assert (relation.schema, relation.table) == ("public", "t")
    assert [c.name for c in relation.columns] == ["id", "big", "tags", "n", "note"]
    changes = [m for m in messages if isinstance(m, pgoutput.Change)]
    assert [c.action for c in changes] == ["I", "U", "D"]
    commits = [m for m in messages if isinstance(m, pgoutput.Commit)]
    assert len(commits) == 3 and commits[0].end_lsn > commits[0].commit_lsn
    table = Table("t", "crud.t", 100)
    inserted = change_data(relation, changes[0], table, commits[0].commit_lsn, 0)
    assert inserted["tags"] == ["a", "b c", None] and inserted["n"] == 12.5
    assert inserted["big"] == big and inserted["note"] is None
    updated = change_data(relation, changes[1], table, commits[1].commit_lsn, 0)
    assert updated["big"] == big, "an unchanged TOASTed value is taken from the old row"
    assert updated["note"] == "changed" and updated["old"]["note"] is None
    deleted = change_data(relation, changes[2], table, commits[2].commit_lsn, 0)
    assert deleted["id"] == 1 and deleted["action"] == "D" and deleted["old"]["id"] == 1


@pytest.mark.parametrize(("text", "expected"), [
    ("{}", []),
    ("{a,b}", ["a", "b"]),
    ('{"a,b","c\\"d",NULL,"NULL"}', ["a,b", 'c"d', None, "NULL"]),
])
def test_array_literals(text, expected):
    assert parse_array(text, str) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-11-24 08:45:03.123+00", "2026-11-24T08:45:03.123+00:00"),
    # Another session zone's offsets become UTC, as the API writes them (its roles pin UTC):
    # no binding parses an offset with seconds (a local mean time, before 1900).
    ("2026-11-24 08:45:03+05:30", "2026-11-24T03:15:03+00:00"),
    ("1890-01-01 05:21:10.25+05:21:10", "1890-01-01T00:00:00.25+00:00"),
    ("1890-01-01 00:00:00-00:19:32", "1890-01-01T00:19:32+00:00"),
    ("2026-01-01 00:30:00+01", "2025-12-31T23:30:00+00:00"),
    ("2026-11-24 08:45:03", "2026-11-24T08:45:03"),
    ("infinity", "infinity"),
])
def test_timestamps_become_iso_8601(text, expected):
    assert _timestamp(text) == expected


@pytest.mark.parametrize("microseconds", [
    849_398_400_000_000,  # a whole second: no fraction, as isoformat() writes it
    849_398_400_000_001, 849_398_400_999_999, 849_398_401_500_000,
    -1, -1_000_000, 0,  # before and at PostgreSQL's epoch
])
def test_commit_times_formatted_per_second_match_isoformat(microseconds):
    # commit_iso formats each second once; the event's time must be what the datetime says.
    expected = datetime(2000, 1, 1, tzinfo=UTC) + timedelta(microseconds=microseconds)
    assert commit_iso(microseconds) == expected.isoformat()
    assert datetime.fromisoformat(commit_iso(microseconds)) == expected


CONFIG = """
entity {
  name: "note"
  fields { name: "body" type: SQL_TYPE_TEXT }
  api { access { read: ["anon"] } }
}
"""


@pytest.fixture
def notes(make_stack):
    return make_stack(from_text(CONFIG), "relay_ops")


def test_a_replaced_or_stopped_relay_leaves_no_log_file(notes):
    """Every relay a stack starts writes its log to a temporary file; the stack removes it
    when it replaces the relay (a restart after a crash) and when it goes down, keeping the
    text for output(). The test suite starts hundreds of relays."""
    first = notes.relay
    assert first.log.exists()
    first.kill(9)
    second = notes.start_relay()
    assert second is not first and second.log.exists()
    assert not first.log.exists()
    assert "streaming" in first.output()  # read before the file went
    notes.down()
    assert not second.log.exists()
    assert "streaming" in second.output()


def fetch(path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:9464{path}", timeout=3) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_health_metrics_logs_and_clean_shutdown(notes):
    status, body = fetch("/health")
    assert status == 200 and json.loads(body) == {"postgres": True, "redis": True}
    with psycopg.connect(notes.pg.dsn(notes.database), autocommit=True) as conn:
        for i in range(5):
            conn.execute("INSERT INTO note (body) VALUES (%s)", (f"n{i}",))
    deadline = time.monotonic() + 10
    while notes.redis.client().xlen("crud.note") < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    status, metrics = fetch("/metrics")
    assert status == 200
    assert 'crud_relay_events_total{entity="note"} 5' in metrics
    assert 'crud_relay_up{backend="postgres"} 1' in metrics
    lint = subprocess.run(["promtool", "check", "metrics"], input=metrics.encode(),
                          capture_output=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr

    notes.redis.kill(9)  # Redis gone: health says so, the relay keeps retrying
    deadline = time.monotonic() + 10
    while fetch("/health")[0] != 503 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert fetch("/health")[0] == 503
    notes.redis.start()
    notes.wait_relay()

    notes.relay.process.send_signal(signal.SIGTERM)
    assert notes.relay.process.wait(15) == 0
    logs = [json.loads(line) for line in notes.relay.output().splitlines()
            if line.startswith("{")]
    assert {"streaming", "connection lost", "stopped"} <= {entry["msg"] for entry in logs}
    assert all({"time", "level", "msg"} <= set(entry) for entry in logs)


def wait_until(condition, timeout: float = 15, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def insert_notes(stack, count: int, tag: str) -> None:
    with psycopg.connect(stack.pg.dsn(stack.database), autocommit=True) as conn:
        conn.execute("INSERT INTO note (body) SELECT %s || i FROM generate_series(1, %s) i",
                     (tag, count))


def relay_ids(client, topic: str = "crud.note") -> list[str]:
    return [i.decode() for i, _ in client.xrange(topic)]


def test_a_foreign_entry_is_an_alert_and_holds_changes_until_removed(notes):
    """What a publish through Dapr does (pubsub.redis Publish: `XADD <topic> * data <event>`,
    components-contrib v1.14.4 pubsub/redis/redis.go:100-121 with a time-based id) blocks the
    relay's commit-position ids; the relay must say so and lose nothing."""
    client = notes.redis.client()
    insert_notes(notes, 3, "before ")
    wait_until(lambda: client.xlen("crud.note") == 3, what="3 entries")
    foreign = client.xadd("crud.note", {"data": json.dumps({
        "specversion": "1.0", "id": "0b8c3a1e-5d5f-4bd2-9b57-000000000000",
        "source": "intruder", "type": "com.dapr.event.sent", "data": {"body": "x"}})}).decode()
    insert_notes(notes, 2, "held ")
    wait_until(lambda: fetch("/health")[0] == 503, what="health 503")
    assert json.loads(fetch("/health")[1])["foreign_entries"] == {"note": foreign}
    assert 'crud_relay_foreign_entry{entity="note"} 1' in fetch("/metrics")[1]
    logs = [json.loads(line) for line in notes.relay.output().splitlines()
            if line.startswith("{")]
    alert = next(e for e in logs if e["msg"] == "foreign entry in change stream")
    assert alert["level"] == "error" and alert["entry_id"] == foreign
    assert "skipped replayed changes" not in {e["msg"] for e in logs}
    assert len(relay_ids(client)) == 4  # 3 of the relay's, the foreign one, nothing else

    # The README's remedy: remove the entry, move the stream's last id back to the top.
    client.xdel("crud.note", foreign)
    client.execute_command("XSETID", "crud.note", relay_ids(client)[-1])
    wait_until(lambda: fetch("/health")[0] == 200, what="health 200", timeout=30)
    wait_until(lambda: client.xlen("crud.note") == 5, what="held changes written")
    bodies = [json.loads(f[b"data"])["data"]["body"] for _, f in client.xrange("crud.note")]
    assert sorted(bodies[:3]) == ["before 1", "before 2", "before 3"]
    assert sorted(bodies[3:]) == ["held 1", "held 2"]
    assert 'crud_relay_foreign_entry{entity="note"}' not in fetch("/metrics")[1]


RETAINED = """
entity {
  name: "note"
  fields { name: "body" type: SQL_TYPE_TEXT }
  api { access { read: ["anon"] } }
  stream { max_len: 5 retention_max_len: 40 }
}
"""


def metric(name: str, **labels: str) -> float | None:
    wanted = name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
    for line in fetch("/metrics")[1].splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    return None


def sse_blocks(path: str, last_event_id: str, seconds: float = 1.5) -> list[dict]:
    """The raw event blocks of an SSE response (event name, id, data), read for a while."""
    sock = socket.create_connection(("127.0.0.1", 80), timeout=seconds)
    sock.sendall((f"GET {path} HTTP/1.0\r\nHost: localhost\r\nLast-Event-ID: {last_event_id}"
                  f"\r\nAuthorization: Bearer {token(ADMIN)}\r\n\r\n").encode())
    data, deadline = b"", time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        data += chunk
    sock.close()
    _, _, body = data.partition(b"\r\n\r\n")
    blocks = []
    for raw in body.decode().split("\n\n"):
        block = {}
        for line in raw.split("\n"):
            key, sep, value = line.partition(": ")
            if sep and key in ("event", "id", "data"):
                block[key] = json.loads(value) if key == "data" else value
        if "data" in block:
            blocks.append(block)
    return blocks


def test_retention_follows_the_slowest_consumer_group_within_its_cap(make_stack):
    """Trimming keeps what a Dapr consumer group has not read and acknowledged, up to
    retention_max_len; past it the group's loss is counted and a resuming SSE client is
    told of the gap before the stream goes on."""
    stack = make_stack(from_text(RETAINED), "relay_retention")
    client = stack.redis.client()
    group = "inventory"
    client.xgroup_create("crud.note", group, id="0", mkstream=True)  # as pubsub.redis does
    insert_notes(stack, 10, "a")
    wait_until(lambda: client.xlen("crud.note") == 10, what="10 entries")
    first = relay_ids(client)
    read = client.xreadgroup(group, group, {"crud.note": ">"}, count=3)
    for message_id, _ in read[0][1]:
        client.xack("crud.note", group, message_id)
    client.xreadgroup(group, group, {"crud.note": ">"}, count=2)  # delivered, never acked
    insert_notes(stack, 20, "b")
    wait_until(lambda: metric("crud_relay_consumer_group_lag", entity="note",
                              group=group) == 25, what="lag 25")
    time.sleep(1.5)  # a few trimming rounds
    ids = relay_ids(client)
    assert len(ids) == 27 and ids[0] == first[3], "kept from the group's oldest pending entry"
    assert metric("crud_relay_consumer_group_pending", entity="note", group=group) == 2
    assert client.get("crud.note.trimmed").decode() == first[2]

    # The group catches up: the stream shrinks to max_len.
    while reply := client.xreadgroup(group, group, {"crud.note": "0"}, count=100)[0][1]:
        for message_id, _ in reply:
            client.xack("crud.note", group, message_id)
    while reply := client.xreadgroup(group, group, {"crud.note": ">"}, count=100):
        for message_id, _ in reply[0][1]:
            client.xack("crud.note", group, message_id)
    wait_until(lambda: client.xlen("crud.note") == 5, what="trimmed to max_len")
    caught_up = relay_ids(client)[-1]

    # The group stops reading; 60 changes later the cap (40) removes 20 it never read.
    insert_notes(stack, 60, "c")
    wait_until(lambda: metric("crud_relay_consumer_group_trimmed_total", entity="note",
                              group=group) == 20, what="20 counted as lost")
    ids = relay_ids(client)
    assert len(ids) == 40
    assert metric("crud_relay_consumer_group_lag", entity="note", group=group) == 40
    logs = [json.loads(line) for line in stack.relay.output().splitlines()
            if line.startswith("{")]
    assert any(e["msg"] == "consumer group lost changes: retention cap reached"
               and e["group"] == group for e in logs)
    trimmed_through = client.get("crud.note.trimmed").decode()
    assert trimmed_through != ids[0] and relay_ids(client)[0] == ids[0]

    # An SSE client that last saw `caught_up` missed 20 removed changes: a gap event first.
    blocks = sse_blocks("/stream/sse/note", caught_up)
    assert blocks[0]["event"] == "gap" and "id" not in blocks[0]
    assert blocks[0]["data"]["gap"] == {"last_event_id": caught_up,
                                        "trimmed_through": trimmed_through}
    assert blocks[0]["data"]["action"] == "T" and blocks[0]["data"]["table_name"] == "note"
    assert [b["id"] for b in blocks[1:]] == ids
    # Counted and logged by the gateway, for consumers that cannot act on the event.
    with urllib.request.urlopen("http://127.0.0.1:9145/metrics", timeout=3) as reply:
        exposition = reply.read().decode()
    assert 'crud_gateway_sse_gaps_total{entity="note"} 1' in exposition.splitlines()
    assert f"sse: gap on note: client resumed from {caught_up}" in stack.gateway.access_log()
    # Resuming from the newest removed id misses nothing: no gap.
    blocks = sse_blocks("/stream/sse/note", trimmed_through)
    assert "event" not in blocks[0] and [b["id"] for b in blocks] == ids


def test_loss_counts_only_what_a_group_never_acknowledged(redis_server):
    """Past the cap, what a group loses is its pending entries and those it was never given:
    entries it acknowledged after an older pending one are not counted."""
    from protoc_gen_crud.relay import retention

    client = redis_server.client()
    topic = "crud.loss_exact"
    client.delete(topic, topic + ".trimmed")
    for i in range(1, 11):
        client.xadd(topic, {"data": "{}"}, id=f"{i}-0")
    client.xgroup_create(topic, "app", id="0")
    delivered = client.xreadgroup("app", "app", {topic: ">"}, count=5)[0][1]
    client.xack(topic, "app", *[i for i, _ in delivered[1:]])  # 1-0 stays pending
    found = retention.trim(client, topic, topic + ".trimmed", max_len=2, retention_max_len=4)
    # 1-0 .. 6-0 go: 1-0 pending, 2-0 .. 5-0 acknowledged, 6-0 never delivered.
    assert [parse for parse, _ in client.xrange(topic)] == [b"7-0", b"8-0", b"9-0", b"10-0"]
    assert found.lost == {"app": 2}
    client.delete(topic, topic + ".trimmed")
