"""crud-relay throughput (changes/s) and commit-to-Redis lag.

1. Backlog drain: with the relay stopped, N rows are inserted (transactions of --batch rows);
   then the relay starts and the time until Redis holds all N is measured: changes/s. The
   baseline in the same run is PostgreSQL decoding the same backlog itself
   (pg_logical_slot_peek_binary_changes), the floor any pgoutput consumer pays.
2. Lag under load: a writer commits single-row transactions at --rate changes/s while a
   reader XREADs the stream and records arrival time minus the event's commit_time.
Run as root: sudo .venv/bin/python bench/relay_throughput.py
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from datetime import datetime

import psycopg
from stack import percentile, running_stack


def drain(stack, rows: int, batch: int) -> tuple[float, float]:
    stack.relay.kill(15)
    with psycopg.connect(stack.pg.dsn(stack.database), autocommit=True) as conn:
        for start in range(0, rows, batch):
            conn.execute("INSERT INTO reading (device_id, value) SELECT 'd' || g, g "
                         "FROM generate_series(%s::int, %s::int) g", (start, start + batch - 1))
        t0 = time.perf_counter()
        conn.execute("SELECT count(*) FROM pg_logical_slot_peek_binary_changes('crud_relay', "
                     "NULL, NULL, 'proto_version', '1', 'publication_names', 'crud_changes')")
        decode_only = time.perf_counter() - t0
    before = stack.redis.client().xlen("crud.reading")
    t0 = time.perf_counter()
    stack.start_relay()
    while stack.redis.client().xlen("crud.reading") < before + rows:
        time.sleep(0.01)
    return rows / (time.perf_counter() - t0), rows / decode_only


def lag(stack, rate: int, seconds: int) -> list[float]:
    client = stack.redis.client()
    last = client.xrevrange("crud.reading", count=1)
    position = last[0][0] if last else b"0-0"
    delays: list[float] = []
    stop = threading.Event()

    def write() -> None:
        with psycopg.connect(stack.pg.dsn(stack.database), autocommit=True) as conn:
            interval, next_at = 1 / rate, time.perf_counter()
            while not stop.is_set():
                conn.execute("INSERT INTO reading (device_id, value) VALUES ('lag', 1)")
                next_at += interval
                time.sleep(max(0, next_at - time.perf_counter()))

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    deadline = time.time() + seconds
    while time.time() < deadline:
        reply = client.xread({"crud.reading": position}, count=1000, block=200)
        now = time.time()
        for _, entries in reply:
            for entry_id, fields in entries:
                position = entry_id
                committed = datetime.fromisoformat(
                    json.loads(fields[b"data"])["data"]["commit_time"]).timestamp()
                delays.append(now - committed)
    stop.set()
    writer.join()
    return delays


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    with running_stack() as stack:
        relay_rate, decode_rate = drain(stack, args.rows, args.batch)
        delays = lag(stack, args.rate, args.seconds)
    print(f"backlog of {args.rows} changes ({args.batch} per transaction):")
    print(f"  PostgreSQL decoding alone: {decode_rate:10.0f} changes/s")
    print(f"  crud-relay into Redis:     {relay_rate:10.0f} changes/s  "
          f"(ratio {relay_rate / decode_rate:.2f}; target >= 20000 changes/s)")
    print(f"commit-to-Redis lag at {args.rate} changes/s over {args.seconds}s "
          f"({len(delays)} changes): p50 {percentile(delays, 50) * 1000:.1f} ms, "
          f"p99 {percentile(delays, 99) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
