"""crud-relay's pieces: the pgoutput decoder on real server output, value conversion, and the
process's operational surface (health, metrics, logs, clean shutdown)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.error
import urllib.request

import psycopg
import pytest

from protoc_gen_crud.relay import pgoutput
from protoc_gen_crud.relay.events import Table, change_data
from protoc_gen_crud.relay.values import _timestamp, parse_array

from .support import from_text


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
    ("2026-11-24 08:45:03+05:30", "2026-11-24T08:45:03+05:30"),
    ("2026-11-24 08:45:03", "2026-11-24T08:45:03"),
    ("infinity", "infinity"),
])
def test_timestamps_become_iso_8601(text, expected):
    assert _timestamp(text) == expected


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
