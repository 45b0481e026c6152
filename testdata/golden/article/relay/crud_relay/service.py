"""The relay process: replication stream in, Redis Streams out, positions confirmed after.

One loop reads pgoutput messages, groups each transaction's changes, and writes committed
transactions to Redis in pipelined batches. Only when Redis has acknowledged every entry up to
a commit is that commit's end position confirmed to PostgreSQL, so a crash anywhere replays
from a point whose changes Redis either has (the XADD is refused as a duplicate) or lacks
(it is written now). Both connections are re-established with backoff when they drop.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import math
import random
import select
import signal
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import psycopg2
import psycopg2.errors
import psycopg2.extras
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from . import pgoutput, retention
from .events import Encoder, Table, cloud_event, format_lsn
from .metrics import Metrics
from .values import commit_iso

DUPLICATE = "equal or smaller than the target stream top item"
BATCH = 2000
# How long committed changes may wait for more before they are written: fewer, larger round
# trips to Redis (and fsyncs of its append-only file) for a few milliseconds of latency.
LINGER = 0.010
log = logging.getLogger("crud-relay")


@dataclass
class Config:
    """relay.json, generated from the model, plus connection strings from the environment."""

    slot: str
    publication: str
    pubsub: str
    source: str
    tables: dict[tuple[str, str], Table]
    metrics_port: int
    confirm_after: float = 0.0
    database_url: str = ""
    redis_url: str = ""
    trim_interval: float = 1.0
    alive_key: str = ""
    alive_seconds: int = 5

    @classmethod
    def load(cls, path: Path, database_url: str, redis_url: str) -> Config:
        raw = json.loads(path.read_text())
        tables = {
            (t["schema"], t["table"]): Table(t["entity"], t["topic"], t["max_len"],
                                             t.get("retention_max_len", t["max_len"]),
                                             t.get("trimmed_key", t["topic"] + ".trimmed"),
                                             t.get("wire", {}), t.get("tenant", ""))
            for t in raw["tables"]
        }
        return cls(raw["slot"], raw["publication"], raw["pubsub"], raw["source"], tables,
                   raw["metrics_port"], raw.get("confirm_after_seconds", 0.0), database_url,
                   redis_url, raw.get("trim_interval_seconds", 1.0),
                   raw.get("alive_key", ""), raw.get("alive_seconds", 5))


class ForeignEntry(Exception):
    """Someone else wrote to a change stream: its top entry is not the relay's.

    A publish through Dapr (or any `XADD *`) gets a time-based id, larger than every
    commit-position id; Redis then refuses every later relay write to that stream as "equal
    or smaller". Those refusals are not replays, so nothing is confirmed past them: the relay
    holds its position, alerts, and writes the held changes once the entry is removed."""

    def __init__(self, table: Table, entry_id: str):
        super().__init__(f"foreign entry {entry_id} in {table.topic}")
        self.table, self.entry_id = table, entry_id


class Relay:
    def __init__(self, config: Config):
        self.config = config
        self.metrics = Metrics()
        self.metrics.retention = {t.entity: max(t.retention_max_len, t.max_len)
                                  for t in config.tables.values()}
        self.stopping = threading.Event()
        # Relation oid -> how its changes become events, or None for a table not streamed.
        self.encoders: dict[int, Encoder | None] = {}
        self.redis: redis.Redis | None = None
        self.pending: list[tuple[str, bytes, Table]] = []  # (id, event, table) to write
        self.pending_end = 0  # end LSN of the last transaction in `pending`
        self.pending_commit_us = 0
        self.pending_since = 0.0
        self.woke = math.inf  # when select() last returned readable, until a change uses it
        self.confirmed = 0
        self.written: collections.deque[tuple[float, int]] = collections.deque()
        self.last_trim = 0.0

    # ------------------------------------------------------------ lifecycle
    def run(self) -> int:
        backoff = 0.5
        while not self.stopping.is_set():
            try:
                self.stream()
                backoff = 0.5
            except ForeignEntry as exc:
                self.metrics.errors += 1
                self.metrics.foreign[exc.table.entity] = exc.entry_id
                log.error("foreign entry in change stream", extra={
                    "topic": exc.table.topic, "entry_id": exc.entry_id,
                    "held_from_lsn": self.confirmed,
                    "fix": f"XDEL {exc.table.topic} {exc.entry_id}, then XSETID "
                           f"{exc.table.topic} <id of the entry now on top>"})
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 10.0)
            except (psycopg2.Error, redis.RedisError, OSError) as exc:
                self.metrics.errors += 1
                self.metrics.postgres_up = self.metrics.redis_up = False
                log.warning("connection lost", extra={"error": str(exc).strip(),
                                                      "retry_in": backoff})
                self.stopping.wait(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, 10.0)
        if self.config.alive_key and self.redis is not None:
            # Stopped on purpose: /health says so now, not when the heartbeat expires.
            with contextlib.suppress(redis.RedisError, OSError):
                self.redis.delete(self.config.alive_key)
        log.info("stopped", extra={"confirmed_lsn": self.confirmed})
        return 0

    def stop(self, *_args) -> None:
        self.stopping.set()

    def connect_redis(self) -> redis.Redis:
        # No transparent retries: a reconnect hidden inside the client would skip the replay
        # from the confirmed position that recovers writes a crashed Redis had not fsynced.
        client = redis.Redis.from_url(self.config.redis_url, socket_timeout=10,
                                      socket_connect_timeout=5,
                                      retry=Retry(NoBackoff(), 0))
        client.ping()
        self.metrics.redis_up = True
        return client

    def stream(self) -> None:
        self.redis = self.connect_redis()
        conn = psycopg2.connect(self.config.database_url,
                                connection_factory=psycopg2.extras.LogicalReplicationConnection)
        try:
            cursor = conn.cursor()
            try:
                cursor.create_replication_slot(self.config.slot, output_plugin="pgoutput")
                log.info("created replication slot", extra={"slot": self.config.slot})
            except psycopg2.errors.DuplicateObject:
                pass
            cursor.start_replication(slot_name=self.config.slot, decode=False, options={
                "proto_version": "1", "publication_names": self.config.publication})
            self.metrics.postgres_up = True
            self.pending, self.encoders, self.written = [], {}, collections.deque()
            log.info("streaming", extra={"slot": self.config.slot})
            self.consume(cursor)
            self.flush(cursor)
        finally:
            self.metrics.postgres_up = False
            conn.close()

    # ---------------------------------------------------------------- loop
    def consume(self, cursor) -> None:
        """Read the replication stream; committed transactions go to `pending`, written in
        batches (flush).

        This loop runs for every message (three per one-row transaction), so it looks at
        each message's first byte instead of decoding it: an Insert, Update or Delete of a
        streamed table is kept as it came until its Commit, one of another table is skipped
        without reading its values, and Begin and Commit only open and close the list."""
        changes: list[tuple[Encoder, bytes]] | None = None  # the open transaction's changes
        encoders = self.encoders
        oid_at = pgoutput.UINT32.unpack_from
        last_feedback = time.monotonic()
        while not self.stopping.is_set():
            message = cursor.read_message()
            if message is None:
                waited = time.monotonic() - self.pending_since
                if self.pending and waited < LINGER:
                    # Sleep out the linger instead of waking for each arriving message:
                    # what arrives meanwhile waits in the socket and is read in one burst
                    # (a wakeup per transaction was most of the relay's CPU under load).
                    time.sleep(LINGER - waited)
                    continue
                self.flush(cursor)
                self.confirm(cursor)
                self.maintain()
                if time.monotonic() - last_feedback > 2:
                    cursor.send_feedback(flush_lsn=self.confirmed, reply=False)
                    self.redis.ping()  # notice a lost Redis while idle, not at the next write
                    last_feedback = time.monotonic()
                self.metrics.lag_bytes = max(0, cursor.wal_end - self.confirmed)
                if select.select([cursor], [], [], 0.5)[0]:
                    # While other tables are written, PostgreSQL's WAL sender sends a keepalive
                    # each time it waits for WAL, about one per commit, and waking for each one
                    # cost the relay 5-7% of a core with nothing to stream. Sleep out a linger
                    # first and read what arrived in one burst; a change read now lingers from
                    # this wake-up (add()), not from its reading, so its latency is unchanged.
                    self.woke = time.monotonic()
                    time.sleep(LINGER)
                continue
            payload = message.payload
            kind = payload[0]
            if kind == 73 or kind == 85 or kind == 68:  # Insert, Update, Delete
                encoder = encoders[oid_at(payload, 1)[0]]
                if encoder is not None and changes is not None:
                    changes.append((encoder, payload))
            elif kind == 66:  # Begin
                changes = []
            elif kind == 67:  # Commit
                if changes is not None:
                    self.add(changes, payload)
                    changes = None
                    if len(self.pending) >= BATCH:
                        self.flush(cursor)
                        self.maintain()
                        last_feedback = time.monotonic()
            elif kind == 82:  # Relation, before a table's first change and after ALTERs
                relation = pgoutput.decode(payload)
                table = self.config.tables.get((relation.schema, relation.table))
                encoders[relation.oid] = None if table is None else Encoder(
                    relation, table, f"{self.config.source}/{table.entity}")

    def add(self, changes: list[tuple[Encoder, bytes]], commit: bytes) -> None:
        """A committed transaction's changes, as events in `pending`."""
        _flags, commit_lsn, end_lsn, commit_us = pgoutput.COMMIT.unpack_from(commit, 1)
        if not self.pending:
            self.pending_since = min(time.monotonic(), self.woke)
            self.woke = math.inf
        committed, position = commit_iso(commit_us), format_lsn(commit_lsn)
        for number, (encoder, payload) in enumerate(changes):
            if payload[0] == 73:  # an Insert's values, read where they are
                values = pgoutput.values_at(payload, pgoutput.INSERT_VALUES)[0]
                data = encoder.data("I", values, None, position, committed)
            else:
                change = pgoutput.decode(payload)
                data = encoder.data(change.action, change.new, change.old, position,
                                    committed)
            event_id = f"{commit_lsn}-{number}"
            self.pending.append((event_id, cloud_event(event_id, data, encoder.table,
                                                       encoder.source, self.config.pubsub),
                                 encoder.table))
        self.pending_end = end_lsn
        self.pending_commit_us = commit_us

    def flush(self, cursor) -> None:
        """Write the pending events; their position becomes confirmable once Redis has them.

        A transaction with no streamed change still moves the position, with nothing to
        write."""
        if self.pending:
            duplicates = 0
            refused: dict[str, Table] = {}
            written: collections.Counter[str] = collections.Counter()
            for (_, _, table), result in zip(self.pending, self.xadd_all(self.pending),
                                             strict=True):
                if isinstance(result, redis.ResponseError):
                    if DUPLICATE not in str(result):
                        raise result
                    duplicates += 1
                    refused[table.topic] = table
                else:
                    written[table.entity] += 1
            for entity, count in written.items():
                self.metrics.count(entity, count)
                self.metrics.foreign.pop(entity, None)
            for table in refused.values():
                self.check_top(table)
            if duplicates:
                log.info("skipped replayed changes", extra={"count": duplicates})
            self.metrics.observe_commit(self.pending_commit_us)
            self.pending = []
        last = self.written[-1][1] if self.written else self.confirmed
        if self.pending_end > last:
            self.written.append((time.monotonic(), self.pending_end))
        self.confirm(cursor)

    def confirm(self, cursor) -> None:
        """Confirm to PostgreSQL the newest position whose changes Redis has durably.

        With Redis fsyncing its append-only file every second, a write is durable a couple
        of seconds after Redis acknowledged it; `confirm_after` waits that long. Until then
        the slot keeps the WAL, and any Redis failure restarts replication from the
        confirmed position, rewriting what Redis may have lost (the rest is refused as
        duplicate). With `confirm_after` 0 (Redis fsyncing every write) it is immediate.
        """
        horizon = time.monotonic() - self.config.confirm_after
        newest = 0
        while self.written and self.written[0][0] <= horizon:
            newest = self.written.popleft()[1]
        if newest > self.confirmed:
            cursor.send_feedback(flush_lsn=newest, reply=False)
            self.confirmed = newest

    def check_top(self, table: Table) -> None:
        """After Redis refused writes as "equal or smaller": a replay if the stream's top
        entry is the relay's own (a CloudEvent whose id is its stream id, from this
        backend); otherwise a foreign entry blocks the stream (ForeignEntry)."""
        top = self.redis.xrevrange(table.topic, "+", "-", count=1)
        if not top:
            return
        entry_id, fields = top[0][0].decode(), top[0][1]
        try:
            event = json.loads(fields.get(b"data", b""))
        except ValueError:
            event = None
        ours = (isinstance(event, dict) and event.get("id") == entry_id
                and event.get("source") == f"{self.config.source}/{table.entity}")
        if not ours:
            raise ForeignEntry(table, entry_id)
        self.metrics.foreign.pop(table.entity, None)

    def maintain(self) -> None:
        """Trim every stream behind its slowest consumer group (retention.py) and record
        the groups' lag, at most every `trim_interval` seconds; and renew the heartbeat key
        (`alive_key`) the gateway's /health reads: it expires unless the relay streams."""
        if time.monotonic() - self.last_trim < self.config.trim_interval:
            return
        self.last_trim = time.monotonic()
        if self.config.alive_key:
            self.redis.set(self.config.alive_key, str(self.confirmed),
                           ex=self.config.alive_seconds)
        for table in self.config.tables.values():
            done = retention.trim(self.redis, table.topic, table.trimmed_key, table.max_len,
                                  max(table.retention_max_len, table.max_len))
            self.metrics.observe_groups(table.entity, done.groups, done.lost)
            for group, count in done.lost.items():
                log.warning("consumer group lost changes: retention cap reached", extra={
                    "topic": table.topic, "group": group, "count": count,
                    "retention_max_len": table.retention_max_len})

    def xadd_all(self, entries: list[tuple[str, bytes, Table]]) -> list[object]:
        """`XADD <topic> <id> data <event>` for every entry in one MULTI/EXEC, one reply per
        entry.

        In a transaction the batch lands in a stream at once: a gateway reader blocked on
        the stream wakes once per batch and reads all of it, instead of waking at the first
        entry and coming back for the rest. A refused XADD (a replayed id) is an error reply
        inside EXEC's answer and does not abort the others.

        The commands are written in RESP directly: redis-py's generic packing was a third of
        the relay's CPU time. Replies are read with redis-py's parser; an error reply comes
        back as the ResponseError it raises, in its place.
        """
        frames = [b"*1\r\n$5\r\nMULTI\r\n"]
        topics: dict[str, bytes] = {}
        for event_id, event, table in entries:
            topic = topics.get(table.topic)
            if topic is None:
                raw = table.topic.encode()
                topic = topics[table.topic] = b"$%d\r\n%b\r\n" % (len(raw), raw)
            key = event_id.encode()
            frames.append(b"*5\r\n$4\r\nXADD\r\n%b$%d\r\n%b\r\n$4\r\ndata\r\n$%d\r\n%b\r\n"
                          % (topic, len(key), key, len(event), event))
        frames.append(b"*1\r\n$4\r\nEXEC\r\n")
        connection = self.redis.connection_pool.get_connection("MULTI")
        try:
            connection.send_packed_command([b"".join(frames)])
            connection.read_response()  # +OK to MULTI
            for _ in entries:
                connection.read_response()  # +QUEUED
            replies = connection.read_response()
            if not isinstance(replies, list) or len(replies) != len(entries):
                raise redis.ResponseError(f"unexpected EXEC reply: {replies!r:.200}")
            return replies
        except BaseException:
            connection.disconnect()
            raise
        finally:
            self.redis.connection_pool.release(connection)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, message and any `extra` fields."""

    skip: ClassVar[set[str]] = set(vars(logging.makeLogRecord({})))

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                 "level": record.levelname.lower(), "msg": record.getMessage()}
        entry.update({k: v for k, v in vars(record).items() if k not in self.skip})
        return json.dumps(entry, default=str)


def serve_http(relay: Relay, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                body, status = relay.metrics.render().encode(), 200
                kind = "text/plain; version=0.0.4"
            elif self.path == "/health":
                ok = (relay.metrics.postgres_up and relay.metrics.redis_up
                      and not relay.metrics.foreign)
                state = {"postgres": relay.metrics.postgres_up, "redis": relay.metrics.redis_up}
                if relay.metrics.foreign:
                    state["foreign_entries"] = dict(relay.metrics.foreign)
                body = json.dumps(state).encode()
                status, kind = (200 if ok else 503), "application/json"
            else:
                body, status, kind = b'{"message":"not found"}', 404, "application/json"
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main(config: Config) -> int:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    relay = Relay(config)
    signal.signal(signal.SIGTERM, relay.stop)
    signal.signal(signal.SIGINT, relay.stop)
    server = serve_http(relay, config.metrics_port)
    try:
        return relay.run()
    finally:
        server.shutdown()
