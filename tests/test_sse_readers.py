"""One Redis reader per nginx worker and stream: the SSE path's work per event does not grow
with the number of subscribers, and nothing is lost or repeated around the shared reader.

Live: real PostgreSQL, crud-relay, Redis and the generated gateway on nginx (two workers or
more, `worker_processes auto`). The worker's ring is made small here (CRUD_SSE_RING) so that
a subscriber whose client stops reading falls out of it.
"""

from __future__ import annotations

import os
import re
import threading
import time

import psycopg
import pytest

from .support import call, from_text
from .test_realtime import SseClient
from .test_realtime_faults import CONFIG as FAULTS_CONFIG
from .test_realtime_faults import Writer, verify, wait_for_length

# The fault tests' `tick` entity (a unique counter per row, read by anon), in its own database.
CONFIG = FAULTS_CONFIG.replace('database { name: "faults" }', 'database { name: "readers" }')
assert CONFIG != FAULTS_CONFIG
TOPIC = "crud.tick"
RING = 16
ENV = {"CRUD_SSE_HEARTBEAT_MS": "500", "CRUD_SSE_RING": str(RING)}
ANON: dict[str, str] = {}  # `tick` is readable without a token


@pytest.fixture
def stack(make_stack):
    return make_stack(from_text(CONFIG), "readers", env=ENV)


def insert(stack, first: int, count: int, note_size: int = 10, per_transaction: int = 0) -> None:
    """Rows n = first .. first+count-1, in one transaction or in transactions of
    `per_transaction`."""
    step = per_transaction or count
    with psycopg.connect(stack.pg.dsn(stack.database), autocommit=True) as conn:
        for start in range(first, first + count, step):
            conn.execute("INSERT INTO tick (n, note) SELECT g, repeat('x', %s) FROM "
                         "generate_series(%s::bigint, %s::bigint) g",
                         (note_size, start, min(start + step, first + count) - 1))


def numbers(events) -> list[int]:
    return [int(data["n"]) for _, data in events]


def ids_increase(events) -> bool:
    keys = [tuple(map(int, event_id.split("-"))) for event_id, _ in events]
    return keys == sorted(set(keys))


def metric(stack, name: str) -> int:
    """The gateway's metric for the `tick` stream (summed over its workers by nginx's shared
    dict), 0 before it was ever set."""
    text = call(stack.host, "GET", "/metrics", port=9145).body.decode()
    found = re.search(rf'^{name}{{entity="tick"}} (\d+)$', text, re.MULTILINE)
    return int(found[1]) if found else 0


def reader_connections(stack) -> list[dict]:
    """Redis connections whose last command is XREAD: the readers (subscribers catching up
    use XRANGE, the relay writes)."""
    return [c for c in stack.redis.client().client_list() if c.get("cmd") == "xread"]


def xread_calls(stack) -> int:
    stats = stack.redis.client().info("commandstats")
    return int(stats.get("cmdstat_xread", {}).get("calls", 0))


def wait_until(what, condition, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not reached: {what}"
        time.sleep(0.05)


def test_a_subscriber_that_falls_behind_the_ring_gets_every_event_once_in_order(stack):
    """A client that stops reading holds its subscriber in a write while the reader goes on
    (the ring keeps 16 entries): when the client reads again, its subscriber reads what left
    the ring from Redis itself, then takes the ring again. It gets each row once, in order,
    and so does a subscriber that kept reading."""
    stalled = SseClient("/stream/sse/tick", ANON, receive_buffer=4096)
    reading = SseClient("/stream/sse/tick", ANON)
    assert (stalled.status, reading.status) == (200, 200)
    wait_until("a reader runs", lambda: metric(stack, "crud_gateway_sse_readers") >= 1)
    catchups = metric(stack, "crud_gateway_sse_catchup_reads_total")
    rows = 1500  # 4 kB each: far more than the stalled socket's buffers take
    insert(stack, 0, rows, note_size=4000, per_transaction=100)
    wait_for_length(stack, rows)
    got = reading.events(rows, timeout=60)
    assert numbers(got) == list(range(rows)) and ids_increase(got)
    late = stalled.events(rows, timeout=60)
    assert numbers(late) == list(range(rows)) and ids_increase(late)
    assert metric(stack, "crud_gateway_sse_catchup_reads_total") > catchups, (
        "no subscriber read from Redis itself: none fell behind the ring")
    # Nothing more, and both are back in the ring: later rows come once, and only once.
    assert stalled.events(1, timeout=0.5) == [] and reading.events(1, timeout=0.5) == []
    insert(stack, rows, 20)
    assert numbers(stalled.events(21, timeout=3)) == list(range(rows, rows + 20))
    assert numbers(reading.events(21, timeout=3)) == list(range(rows, rows + 20))
    stalled.close()
    reading.close()


def test_a_dropped_reader_connection_loses_and_repeats_nothing(stack):
    """The readers' Redis connections are killed ten times during a burst of single-row
    transactions: each reader reconnects and reads on after the last entry it had, so its
    subscribers see every row once, in order."""
    clients = [SseClient("/stream/sse/tick", ANON) for _ in range(4)]
    rows = 3000
    writer = threading.Thread(target=insert, args=(stack, 0, rows), kwargs={
        "per_transaction": 1}, daemon=True)
    writer.start()
    redis = stack.redis.client()
    killed = 0
    deadline = time.monotonic() + 60
    # Ten kills that hit a live connection (one listed a moment ago may already be gone
    # when the reader was between connections: such a kill counts nothing).
    while killed < 10:
        assert time.monotonic() < deadline, f"only {killed} reader connections killed"
        wait_until("a reader is connected", lambda: reader_connections(stack))
        for connection in reader_connections(stack):
            killed += redis.client_kill_filter(_id=connection["id"])
        time.sleep(0.1)
    writer.join(120)
    assert not writer.is_alive()
    wait_for_length(stack, rows)
    for client in clients:
        got = client.events(rows, timeout=30) + client.events(1, timeout=0.5)
        assert numbers(got) == list(range(rows)) and ids_increase(got)
        assert not client.closed
        client.close()


def test_redis_restarted_under_open_streams(stack):
    """Redis killed and restarted during a 10,000-row burst: the subscribers stay connected
    and, once the readers are back, get every row once in commit order."""
    client = SseClient("/stream/sse/tick", ANON)
    writer = Writer(stack.pg.dsn(stack.database))
    writer.start()
    wait_for_length(stack, 3000)
    stack.redis.kill(9)
    time.sleep(1)
    stack.redis.start()
    verify(stack, writer, client)
    assert not client.closed
    client.close()


def test_the_reader_stops_when_the_last_subscriber_leaves(stack):
    clients = [SseClient("/stream/sse/tick", ANON) for _ in range(6)]
    wait_until("readers run", lambda: metric(stack, "crud_gateway_sse_readers") >= 1
               and reader_connections(stack))
    insert(stack, 0, 3)
    for client in clients:
        assert numbers(client.events(4, timeout=3)) == [0, 1, 2]
    for client in clients[1:]:
        client.close()
    # One subscriber left: its worker's reader still runs and delivers.
    insert(stack, 3, 1)
    assert numbers(clients[0].events(2, timeout=3)) == [3]
    assert metric(stack, "crud_gateway_sse_readers") >= 1
    clients[0].close()
    wait_until("readers stopped", lambda: metric(stack, "crud_gateway_sse_readers") == 0
               and not reader_connections(stack))
    assert metric(stack, "crud_gateway_sse_subscribers") == 0
    # A new subscriber starts a new reader, which begins where the stream is now.
    again = SseClient("/stream/sse/tick", ANON)
    wait_until("a reader runs again", lambda: metric(stack, "crud_gateway_sse_readers") >= 1)
    insert(stack, 4, 2)
    assert numbers(again.events(3, timeout=3)) == [4, 5]
    again.close()


def test_redis_reads_do_not_grow_with_the_subscribers(stack):
    """The same 200 changes to 1 subscriber and to 20: Redis serves the XREADs of one reader
    per worker either way, not one per subscriber (the design before issue 16 made 20 times
    as many)."""
    reads, readers = {}, {}
    first = 0
    for count in (1, 20):
        clients = [SseClient("/stream/sse/tick", ANON) for _ in range(count)]
        wait_until("readers are reading", lambda: reader_connections(stack) and len(
            reader_connections(stack)) == metric(stack, "crud_gateway_sse_readers"))
        readers[count] = metric(stack, "crud_gateway_sse_readers")
        before = xread_calls(stack)
        insert(stack, first, 200, per_transaction=10)
        for client in clients:
            assert numbers(client.events(200, timeout=10)) == list(range(first, first + 200))
        reads[count] = xread_calls(stack) - before
        for client in clients:
            assert client.events(1, timeout=0.2) == []  # and nothing twice
            client.close()
        wait_until("readers stopped", lambda: metric(stack, "crud_gateway_sse_readers") == 0)
        first += 200
    assert readers[1] == 1
    # `reuseport`: the kernel spreads the 20 connections over the workers, so more than one
    # worker has subscribers (all 20 on one of two workers: about one chance in 500,000).
    assert readers[20] >= min(2, len(os.sched_getaffinity(0))), readers
    # At most one reader per worker (`worker_processes auto`: one per CPU).
    assert readers[20] <= max(os.cpu_count() or 1, len(os.sched_getaffinity(0))), readers
    # Per reader, about what one subscriber alone cost; 20 subscribers with their own reads
    # would be at least 20 times the reads that delivered the rows.
    assert reads[20] <= readers[20] * (2 * reads[1] + 4), (reads, readers)
    assert reads[20] < 20 * reads[1], (reads, readers)
