"""Fan-out: many SSE subscribers through the gateway while rows change at a fixed rate.

Every subscriber counts the events it receives (dropped = written - received); a sample of
"probe" subscribers also parses each event's commit_time and records commit-to-client
latency. Reference point from the brief: Supabase Realtime publishes 64 changes/s at 500
subscribers; the target here is ten times that (640 changes/s) with p95 <= 200 ms.

Each configuration runs --runs times (5 by default) on the same stack, and every run is
printed: besides delivery and latency, Redis commands per second (from `INFO commandstats`,
so XREAD calls can be set against the change rate) and the CPU each process used during the
run, in % of one core: every nginx worker on its own, Redis, the relay, PostgreSQL (all of its
processes), this benchmark's subscribers and its writer processes, and the machine's idle.
Run as root: sudo .venv/bin/python bench/fanout.py
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import re
import resource
import time
from datetime import datetime
from pathlib import Path

import psycopg
from stack import percentile, running_stack

COMMIT_TIME = re.compile(rb'"commit_time":"([^"]+)"')
TICKS = os.sysconf("SC_CLK_TCK")


def processes() -> dict[int, tuple[int, int]]:
    """Every process: pid -> (parent pid, CPU ticks used so far, user + system)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        table[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    return table


def descendants(table: dict[int, tuple[int, int]], root: int) -> list[int]:
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            found.append(pid)
            todo.extend(child for child, (parent, _) in table.items() if parent == pid)
    return found


def process_groups(stack, writers: list[int]) -> dict[str, list[int]]:
    """The processes to account for, by name; each nginx worker on its own."""
    table = processes()
    groups: dict[str, list[int]] = {}
    gateway = stack.gateway.process.pid
    for worker in sorted(pid for pid, (parent, _) in table.items() if parent == gateway):
        groups[f"nginx worker {worker}"] = [worker]
    groups["redis"] = [stack.redis.process.pid]
    groups["relay"] = descendants(table, stack.relay.process.pid)
    postmaster = int((stack.pg.data / "postmaster.pid").read_text().split()[0])
    groups["postgres"] = descendants(table, postmaster)
    groups["subscribers (this process)"] = [os.getpid()]
    groups["writers"] = writers
    return groups


def cpu_ticks(groups: dict[str, list[int]]) -> dict[str, int]:
    table = processes()
    return {name: sum(table[pid][1] for pid in pids if pid in table)
            for name, pids in groups.items()}


def idle_ticks() -> tuple[int, int]:
    """The machine's idle and total CPU ticks so far (all cores)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return values[3] + values[4], sum(values)


def redis_calls(stack) -> dict[str, int]:
    stats = stack.redis.client().info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


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
    # Costs are taken over the writing period only (the subscribers are all connected).
    groups = process_groups(stack, [writer.pid for writer in writers])
    calls_before, cpu_before, idle_before = redis_calls(stack), cpu_ticks(groups), idle_ticks()
    started = time.monotonic()
    last_cpu = cpu_before
    while any(writer.is_alive() for writer in writers):
        last_cpu = cpu_ticks(groups)  # the writers' ticks are gone once they exit
        await asyncio.sleep(0.2)
    elapsed = time.monotonic() - started
    calls_after, cpu_after, idle_after = redis_calls(stack), cpu_ticks(groups), idle_ticks()
    cpu_after["writers"] = max(cpu_after["writers"], last_cpu["writers"])
    await asyncio.sleep(3)  # let the last events arrive
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    costs = {
        "redis_per_second": {name: (calls_after[name] - calls_before.get(name, 0)) / elapsed
                             for name in calls_after
                             if calls_after[name] > calls_before.get(name, 0)},
        "cpu_percent": {name: 100 * (cpu_after[name] - cpu_before[name]) / TICKS / elapsed
                        for name in groups},
        "idle_percent": 100 * (idle_after[0] - idle_before[0]) / max(
            1, idle_after[1] - idle_before[1]),
    }
    return written.value, clients, costs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscribers", type=int, default=500)
    parser.add_argument("--probes", type=int, default=25)
    parser.add_argument("--rate", type=int, default=640)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(f"{args.subscribers} subscribers at {args.rate} changes/s for {args.seconds:.0f}s, "
          f"{args.runs} runs")
    with running_stack() as stack:
        for run in range(1, args.runs + 1):
            written, clients, costs = asyncio.run(measure(stack, args.subscribers, args.probes,
                                                          args.rate, args.seconds))
            report(run, args, written, clients, costs)


def report(run: int, args, written: int, clients: list[Subscriber], costs: dict) -> None:
    received = [c.events for c in clients]
    latencies = [x for c in clients for x in c.latencies]
    dropped = sum(written - r for r in received)
    print(f"run {run}: {written} changes ({written * args.subscribers} deliveries expected)")
    print(f"  received per subscriber: min {min(received)}, max {max(received)}; "
          f"dropped in total: {dropped}")
    print(f"  commit-to-client latency ({len(latencies)} samples from {args.probes} probes): "
          f"p50 {percentile(latencies, 50) * 1000:.0f} ms, "
          f"p95 {percentile(latencies, 95) * 1000:.0f} ms, "
          f"p99 {percentile(latencies, 99) * 1000:.0f} ms  (target p95 <= 200 ms)")
    commands = sorted(costs["redis_per_second"].items(), key=lambda item: -item[1])
    print("  redis commands/s: " + ", ".join(f"{name} {rate:.0f}" for name, rate in commands
                                              if rate >= 0.5))
    print("  cpu (% of one core): " + ", ".join(
        f"{name} {percent:.0f}" for name, percent in costs["cpu_percent"].items())
        + f"; machine idle {costs['idle_percent']:.0f}%")


if __name__ == "__main__":
    main()
