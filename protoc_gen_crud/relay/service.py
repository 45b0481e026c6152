"""The relay process: replication stream in, Redis Streams out, positions confirmed after.

One loop reads pgoutput messages, groups each transaction's changes, and writes committed
transactions to Redis in pipelined batches. Only when Redis has acknowledged every entry up to
a commit is that commit's end position confirmed to PostgreSQL, so a crash anywhere replays
from a point whose changes Redis either has (the XADD is refused as a duplicate) or lacks
(it is written now). Both connections are re-established with backoff when they drop.
"""

from __future__ import annotations

import json
import logging
import random
import select
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import psycopg2
import psycopg2.errors
import psycopg2.extras
import redis

from . import pgoutput
from .events import Table, change_data, cloud_event
from .metrics import Metrics

DUPLICATE = "equal or smaller than the target stream top item"
BATCH = 2000
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
    database_url: str = ""
    redis_url: str = ""

    @classmethod
    def load(cls, path: Path, database_url: str, redis_url: str) -> Config:
        raw = json.loads(path.read_text())
        tables = {
            (t["schema"], t["table"]): Table(t["entity"], t["topic"], t["max_len"])
            for t in raw["tables"]
        }
        return cls(raw["slot"], raw["publication"], raw["pubsub"], raw["source"], tables,
                   raw["metrics_port"], database_url, redis_url)


@dataclass
class Transaction:
    commit_lsn: int = 0
    commit_time: int = 0
    changes: list[tuple[pgoutput.Relation, pgoutput.Change, Table]] = field(
        default_factory=list)


class Relay:
    def __init__(self, config: Config):
        self.config = config
        self.metrics = Metrics()
        self.stopping = threading.Event()
        self.relations: dict[int, pgoutput.Relation] = {}
        self.redis: redis.Redis | None = None
        self.pending: list[tuple[str, bytes, Table]] = []  # (id, event, table) to write
        self.pending_end = 0  # end LSN of the last transaction in `pending`
        self.pending_commit_us = 0
        self.confirmed = 0

    # ------------------------------------------------------------ lifecycle
    def run(self) -> int:
        backoff = 0.5
        while not self.stopping.is_set():
            try:
                self.stream()
                backoff = 0.5
            except (psycopg2.Error, redis.RedisError, OSError) as exc:
                self.metrics.errors += 1
                self.metrics.postgres_up = self.metrics.redis_up = False
                log.warning("connection lost", extra={"error": str(exc).strip(),
                                                      "retry_in": backoff})
                self.stopping.wait(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, 10.0)
        log.info("stopped", extra={"confirmed_lsn": self.confirmed})
        return 0

    def stop(self, *_args) -> None:
        self.stopping.set()

    def connect_redis(self) -> redis.Redis:
        client = redis.Redis.from_url(self.config.redis_url, socket_timeout=10,
                                      socket_connect_timeout=5)
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
            self.pending, self.relations = [], {}
            log.info("streaming", extra={"slot": self.config.slot})
            self.consume(cursor)
            self.flush(cursor)
        finally:
            self.metrics.postgres_up = False
            conn.close()

    # ---------------------------------------------------------------- loop
    def consume(self, cursor) -> None:
        txn: Transaction | None = None
        last_feedback = time.monotonic()
        while not self.stopping.is_set():
            message = cursor.read_message()
            if message is None:
                self.flush(cursor)
                if time.monotonic() - last_feedback > 2:
                    cursor.send_feedback(flush_lsn=self.confirmed, reply=False)
                    self.redis.ping()  # notice a lost Redis while idle, not at the next write
                    last_feedback = time.monotonic()
                self.metrics.lag_bytes = max(0, cursor.wal_end - self.confirmed)
                select.select([cursor], [], [], 0.5)
                continue
            decoded = pgoutput.decode(message.payload)
            if isinstance(decoded, pgoutput.Begin):
                txn = Transaction(decoded.final_lsn, decoded.commit_time)
            elif isinstance(decoded, pgoutput.Relation):
                self.relations[decoded.oid] = decoded
            elif isinstance(decoded, pgoutput.Change) and txn is not None:
                relation = self.relations[decoded.relation_oid]
                table = self.config.tables.get((relation.schema, relation.table))
                if table is not None:
                    txn.changes.append((relation, decoded, table))
            elif isinstance(decoded, pgoutput.Commit) and txn is not None:
                self.add(txn, decoded)
                txn = None
                if len(self.pending) >= BATCH:
                    self.flush(cursor)
                    last_feedback = time.monotonic()

    def add(self, txn: Transaction, commit: pgoutput.Commit) -> None:
        for number, (relation, change, table) in enumerate(txn.changes):
            event_id = f"{commit.commit_lsn}-{number}"
            data = change_data(relation, change, table, commit.commit_lsn, commit.commit_time)
            self.pending.append((event_id, cloud_event(event_id, data, table,
                                                       f"{self.config.source}/{table.entity}",
                                                       self.config.pubsub), table))
        self.pending_end = commit.end_lsn
        self.pending_commit_us = commit.commit_time

    def flush(self, cursor) -> None:
        """Write pending events; confirm their position only once Redis has them all."""
        if self.pending_end <= self.confirmed:
            return
        if self.pending:
            pipe = self.redis.pipeline(transaction=False)
            for event_id, event, table in self.pending:
                pipe.xadd(table.topic, {"data": event}, id=event_id, maxlen=table.max_len,
                          approximate=True)
            written = duplicates = 0
            for (_event_id, _event, table), result in zip(
                    self.pending, pipe.execute(raise_on_error=False), strict=True):
                if isinstance(result, Exception):
                    if DUPLICATE not in str(result):
                        raise result
                    duplicates += 1
                else:
                    written += 1
                    self.metrics.count(table.entity)
            if duplicates:
                log.info("skipped replayed changes", extra={"count": duplicates})
            self.metrics.observe_commit(self.pending_commit_us)
        cursor.send_feedback(flush_lsn=self.pending_end, reply=False)
        self.confirmed = self.pending_end
        self.pending = []


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
                ok = relay.metrics.postgres_up and relay.metrics.redis_up
                body = json.dumps({"postgres": relay.metrics.postgres_up,
                                   "redis": relay.metrics.redis_up}).encode()
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
