"""Fan-out: many SSE subscribers through the gateway while rows change at a fixed rate.

Every subscriber counts the events it receives (dropped = written - received); a sample of
"probe" subscribers also parses each event's commit_time and records commit-to-client
latency. Reference point from the brief: Supabase Realtime publishes 64 changes/s at 500
subscribers; the target here is ten times that (640 changes/s) with p95 <= 200 ms.

Each configuration runs --runs times (5 by default) on the same stack, and every run is
printed: besides delivery and latency, Redis commands per second (from `INFO commandstats`,
with XREAD calls set against the relay's batch rate) and the CPU each process used during the
run, in % of one core: every nginx worker on its own, Redis, the relay, PostgreSQL (all of its
processes), this benchmark's subscribers (spread over --client-processes processes, so that
the clients are not what limits the run) and its writer processes, and the machine's idle.
Run as root: sudo .venv/bin/python bench/fanout.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import re
import resource
import time
import urllib.request
from datetime import datetime

import psycopg
from stack import TICKS, descendants, idle_ticks, percentile, processes, running_stack

COMMIT_TIME = re.compile(rb'"commit_time":"([^"]+)"')


def process_groups(stack, writers: list[int], clients: list[int]) -> dict[str, list[int]]:
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
    groups["subscribers"] = clients
    groups["writers"] = writers
    return groups


def cpu_ticks(groups: dict[str, list[int]]) -> dict[str, int]:
    table = processes()
    return {name: sum(table[pid][1] for pid in pids if pid in table)
            for name, pids in groups.items()}


def redis_calls(stack) -> dict[str, int]:
    stats = stack.redis.client().info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


def relay_batches(stack) -> int:
    """Batches the relay has written to Redis so far: the count of its per-batch
    commit-to-Redis histogram. Each batch wakes every worker's reader at most once."""
    port = json.loads((stack.generated / "relay" / "relay.json").read_text())["metrics_port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return int(re.search(r"^crud_relay_commit_to_redis_seconds_count (\d+)", text, re.M)
               .group(1))


class Subscriber(asyncio.Protocol):
    """One SSE connection. A protocol rather than a stream reader: the client side must stay
    cheap, or at 1,000 subscribers the benchmark measures its own clients."""

    def __init__(self, probe: bool, path: bytes):
        self.probe, self.path, self.events, self.latencies = probe, path, 0, []
        self.ready, self.closed = asyncio.Event(), asyncio.Event()
        self.buffer, self.transport = b"", None

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(b"GET " + self.path + b" HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n")

    def data_received(self, chunk: bytes) -> None:
        now = time.time()
        if not self.ready.is_set() and b"retry:" in chunk:
            self.ready.set()
        self.buffer += chunk
        complete, _, self.buffer = self.buffer.rpartition(b"\n\n")
        self.events += complete.count(b"\ndata: ") + complete.startswith(b"data: ")
        if self.probe:
            for stamp in COMMIT_TIME.findall(complete):
                self.latencies.append(now - datetime.fromisoformat(stamp.decode()).timestamp())

    def connection_lost(self, exc) -> None:
        self.closed.set()


def subscribe(count: int, probes: int, ready, stop, results) -> None:
    """One client process: `count` subscribers on one event loop. Several such processes
    share the subscribers so that the clients are not the bottleneck on two cores."""

    async def run() -> None:
        loop = asyncio.get_running_loop()
        clients = []
        for i in range(count):
            _, client = await loop.create_connection(
                lambda i=i: Subscriber(i < probes, b"/stream/sse/reading"), "127.0.0.1", 80)
            clients.append(client)
        await asyncio.wait_for(asyncio.gather(*(c.ready.wait() for c in clients)), 60)
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.1)
        for client in clients:
            client.transport.close()
        results.send(([c.events for c in clients], [x for c in clients for x in c.latencies]))

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(run())


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


def measure(stack, subscribers: int, probes: int, rate: int, seconds: float,
            client_processes: int):
    stop = multiprocessing.Event()
    shares = [subscribers // client_processes + (i < subscribers % client_processes)
              for i in range(client_processes)]
    probe_shares = [probes // client_processes + (i < probes % client_processes)
                    for i in range(client_processes)]
    clients, pipes = [], []
    for share, probe_share in zip(shares, probe_shares, strict=True):
        ready, (receive, send) = multiprocessing.Event(), multiprocessing.Pipe(duplex=False)
        process = multiprocessing.Process(target=subscribe,
                                          args=(share, probe_share, ready, stop, send))
        process.start()
        clients.append((process, ready))
        pipes.append(receive)
    for process, ready in clients:
        if not ready.wait(60):
            raise RuntimeError(f"client process {process.pid} did not connect its subscribers")
    written = multiprocessing.Value("q", 0)
    writers = [multiprocessing.Process(target=write_at_rate, args=(
        stack.pg.dsn(stack.database), rate / 2, seconds, written)) for _ in range(2)]
    for writer in writers:  # two connections: one alone cannot commit 640 times a second
        writer.start()
    # Costs are taken over the writing period only (the subscribers are all connected).
    groups = process_groups(stack, [writer.pid for writer in writers],
                            [process.pid for process, _ in clients])
    calls_before, cpu_before, idle_before = redis_calls(stack), cpu_ticks(groups), idle_ticks()
    batches_before = relay_batches(stack)
    started = time.monotonic()
    last_cpu = cpu_before
    while any(writer.is_alive() for writer in writers):
        last_cpu = cpu_ticks(groups)  # the writers' ticks are gone once they exit
        time.sleep(0.2)
    elapsed = time.monotonic() - started
    calls_after, cpu_after, idle_after = redis_calls(stack), cpu_ticks(groups), idle_ticks()
    batches = (relay_batches(stack) - batches_before) / elapsed
    cpu_after["writers"] = max(cpu_after["writers"], last_cpu["writers"])
    time.sleep(3)  # let the last events arrive
    stop.set()
    received, latencies = [], []
    for pipe in pipes:
        counts, samples = pipe.recv()
        received.extend(counts)
        latencies.extend(samples)
    for process, _ in clients:
        process.join(30)
    costs = {
        "redis_per_second": {name: (calls_after[name] - calls_before.get(name, 0)) / elapsed
                             for name in calls_after
                             if calls_after[name] > calls_before.get(name, 0)},
        "cpu_percent": {name: 100 * (cpu_after[name] - cpu_before[name]) / TICKS / elapsed
                        for name in groups},
        "batches_per_second": batches,
        "workers": sum(name.startswith("nginx worker") for name in groups),
        "idle_percent": 100 * (idle_after[0] - idle_before[0]) / max(
            1, idle_after[1] - idle_before[1]),
    }
    return written.value, received, latencies, costs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscribers", type=int, default=500)
    parser.add_argument("--probes", type=int, default=25)
    parser.add_argument("--rate", type=int, default=640)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--client-processes", type=int, default=2,
                        help="processes the subscribers are spread over")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(f"{args.subscribers} subscribers at {args.rate} changes/s for {args.seconds:.0f}s, "
          f"{args.runs} runs, clients in {args.client_processes} processes")
    with running_stack() as stack:
        for run in range(1, args.runs + 1):
            written, received, latencies, costs = measure(
                stack, args.subscribers, args.probes, args.rate, args.seconds,
                args.client_processes)
            report(run, args, written, received, latencies, costs)


def report(run: int, args, written: int, received: list[int], latencies: list[float],
           costs: dict) -> None:
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
    xread = costs["redis_per_second"].get("xread", 0.0)
    bound = 2 * costs["workers"] * 1 * costs["batches_per_second"]
    print(f"  XREAD/s {xread:.0f} against 2 x {costs['workers']} workers x 1 stream x "
          f"{costs['batches_per_second']:.0f} relay batches/s = {bound:.0f} "
          f"({'within' if xread <= bound else 'ABOVE'} the bound)")
    print("  cpu (% of one core): " + ", ".join(
        f"{name} {percent:.0f}" for name, percent in costs["cpu_percent"].items())
        + f"; machine idle {costs['idle_percent']:.0f}%")


if __name__ == "__main__":
    main()
