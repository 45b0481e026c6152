"""Nothing lost, nothing doubled: kill or restart one process during a 10,000-change burst.

A single writer inserts rows n = 0..9999 in transactions of ten (retrying a transaction whose
outcome a fault hid; ON CONFLICT makes the retry harmless), so commit order is n order. After
the fault the entity's Redis stream must hold each row exactly once, in commit order, and an
SSE client that stayed connected must have seen exactly the same.
"""

from __future__ import annotations

import json
import threading
import time

import psycopg
import pytest

from protoc_gen_crud.devstack import LocalStack

from .support import from_text
from .test_realtime import SseClient

CONFIG = """
database { name: "faults" }
entity {
  name: "tick"
  fields { name: "n" type: SQL_TYPE_BIGINT constraints { not_null: true unique: true } }
  fields { name: "note" type: SQL_TYPE_TEXT }
  api { access { read: ["anon"] } }
  stream { max_len: 1000000 }
}
"""
TOTAL, PER_TRANSACTION = 10_000, 10
TOPIC = "crud.tick"


@pytest.fixture
def stack(make_stack):
    return make_stack(from_text(CONFIG), "faults")


class Writer(threading.Thread):
    def __init__(self, dsn: str):
        super().__init__(daemon=True)
        self.dsn, self.retries = dsn, 0

    def run(self) -> None:
        n = 0
        while n < TOTAL:
            try:
                with psycopg.connect(self.dsn, connect_timeout=3) as conn:
                    while n < TOTAL:
                        with conn.transaction():
                            conn.execute(
                                "INSERT INTO tick (n, note) SELECT g, 'burst' FROM "
                                "generate_series(%s::bigint, %s::bigint) g "
                                "ON CONFLICT (n) DO NOTHING", (n, n + PER_TRANSACTION - 1))
                        n += PER_TRANSACTION
            except psycopg.OperationalError:
                self.retries += 1
                time.sleep(0.2)


def stream_length(stack: LocalStack) -> int:
    return stack.redis.client().xlen(TOPIC)


def wait_for_length(stack: LocalStack, wanted: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if stream_length(stack) >= wanted:
                return
        except Exception:  # Redis may be restarting
            pass
        time.sleep(0.05)
    raise TimeoutError(f"stream did not reach {wanted} entries")


def verify(stack: LocalStack, writer: Writer, client: SseClient | None) -> None:
    writer.join(120)
    assert not writer.is_alive()
    with psycopg.connect(stack.pg.dsn(stack.database)) as conn:
        table = [n for (n,) in conn.execute("SELECT n FROM tick ORDER BY n")]
    assert table == list(range(TOTAL))
    wait_for_length(stack, TOTAL)
    time.sleep(0.5)  # anything extra would arrive now
    entries = stack.redis.client().xrange(TOPIC)
    # n is a BIGINT: a JSON string on the wire (int64 in proto3 JSON).
    seen = [int(json.loads(fields[b"data"])["data"]["n"]) for _, fields in entries]
    assert len(seen) == TOTAL, f"{len(seen) - len(set(seen))} duplicates"
    assert seen == table, "stream order is not commit order"
    if client is not None:
        events = client.events(TOTAL + 1, timeout=5)
        assert [int(data["n"]) for _, data in events] == table


@pytest.mark.one_major
def test_relay_killed_mid_burst(stack):
    client = SseClient("/stream/sse/tick")
    writer = Writer(stack.pg.dsn(stack.database))
    writer.start()
    wait_for_length(stack, 3000)
    stack.relay.kill(9)
    time.sleep(1)
    stack.start_relay()
    verify(stack, writer, client)
    client.close()


def test_redis_killed_mid_burst(stack):
    writer = Writer(stack.pg.dsn(stack.database))
    writer.start()
    wait_for_length(stack, 3000)
    stack.redis.kill(9)
    time.sleep(1)
    stack.redis.start()  # replays its append-only file
    verify(stack, writer, None)
    log = stack.relay.output()
    assert "connection lost" in log
    # Replication restarted from the confirmed position: what Redis kept was refused as a
    # duplicate, what its crash lost was written again.
    assert "skipped replayed changes" in log


@pytest.mark.one_major
def test_postgres_restarted_mid_burst(stack):
    client = SseClient("/stream/sse/tick")
    writer = Writer(stack.pg.dsn(stack.database))
    writer.start()
    wait_for_length(stack, 3000)
    stack.pg.restart()
    verify(stack, writer, client)
    assert writer.retries >= 1
    client.close()
