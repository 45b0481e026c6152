"""Fan-out: many SSE subscribers through the gateway while rows change at a fixed rate.

Every subscriber counts the events it receives (dropped = written - received); a sample of
"probe" subscribers also parses each event's commit_time and records commit-to-client
latency. Reference point from the brief: Supabase Realtime publishes 64 changes/s at 500
subscribers; the target here is ten times that (640 changes/s) with p95 <= 200 ms.
Run as root: sudo .venv/bin/python bench/fanout.py
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import re
import resource
import time
from datetime import datetime

import psycopg
from stack import percentile, running_stack

COMMIT_TIME = re.compile(rb'"commit_time":"([^"]+)"')


class Subscriber:
    def __init__(self, probe: bool):
        self.probe, self.events, self.latencies = probe, 0, []
        self.ready = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", 80)
        writer.write(b"GET /stream/sse/reading HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n")
        await writer.drain()
        buffer = b""
        while not stop.is_set():
            try:
                chunk = await asyncio.wait_for(reader.read(262144), 0.5)
            except TimeoutError:
                continue
            if not chunk:
                break
            now = time.time()
            if not self.ready.is_set() and b"retry:" in chunk:
                self.ready.set()
            buffer += chunk
            complete, _, buffer = buffer.rpartition(b"\n\n")
            self.events += complete.count(b"\ndata: ") + complete.startswith(b"data: ")
            if self.probe:
                for stamp in COMMIT_TIME.findall(complete):
                    self.latencies.append(now - datetime.fromisoformat(stamp.decode())
                                          .timestamp())
        writer.close()


def write_at_rate(dsn: str, rate: int, seconds: float, written) -> None:
    """In its own process, so the subscribers' event loop cannot slow it down."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        interval, next_at, end = 1 / rate, time.perf_counter(), time.perf_counter() + seconds
        while time.perf_counter() < end:
            conn.execute("INSERT INTO reading (device_id, value) VALUES ('fan', 1)")
            with written.get_lock():
                written.value += 1
            next_at += interval
            time.sleep(max(0.0, next_at - time.perf_counter()))


async def measure(stack, subscribers: int, probes: int, rate: int, seconds: float):
    stop = asyncio.Event()
    clients = [Subscriber(i < probes) for i in range(subscribers)]
    tasks = [asyncio.create_task(c.run(stop)) for c in clients]
    await asyncio.wait_for(asyncio.gather(*(c.ready.wait() for c in clients)), 60)
    written = multiprocessing.Value("q", 0)
    writers = [multiprocessing.Process(target=write_at_rate, args=(
        stack.pg.dsn(stack.database), rate / 2, seconds, written)) for _ in range(2)]
    for writer in writers:  # two connections: one alone cannot commit 640 times a second
        writer.start()
    while any(writer.is_alive() for writer in writers):
        await asyncio.sleep(0.2)
    await asyncio.sleep(3)  # let the last events arrive
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return written.value, clients


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscribers", type=int, default=500)
    parser.add_argument("--probes", type=int, default=25)
    parser.add_argument("--rate", type=int, default=640)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with running_stack() as stack:
        written, clients = asyncio.run(measure(stack, args.subscribers, args.probes,
                                               args.rate, args.seconds))
    received = [c.events for c in clients]
    latencies = [x for c in clients for x in c.latencies]
    dropped = sum(written - r for r in received)
    print(f"{args.subscribers} subscribers, {written} changes at {args.rate}/s over "
          f"{args.seconds:.0f}s ({written * args.subscribers} deliveries expected)")
    print(f"  received per subscriber: min {min(received)}, max {max(received)}; "
          f"dropped in total: {dropped}")
    print(f"  commit-to-client latency ({len(latencies)} samples from {args.probes} probes): "
          f"p50 {percentile(latencies, 50) * 1000:.0f} ms, "
          f"p95 {percentile(latencies, 95) * 1000:.0f} ms, "
          f"p99 {percentile(latencies, 99) * 1000:.0f} ms  (target p95 <= 200 ms)")


if __name__ == "__main__":
    main()
