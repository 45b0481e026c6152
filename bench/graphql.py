"""GraphQL throughput: the gateway's cost and the engine's cost.

The generated `graphql/` (PostGraphile on Node 22, as scripts/setup.sh --system installs it)
over the benchmark backend (bench/stack.py), with 4 keep-alive connections from wrk:
- a list query (20 rows) and a create mutation, through the gateway (`/api/v1/graphql` on
  nginx) and sent straight to PostGraphile in the same run: the ratio is the gateway's cost
  (target: the gateway keeps >= 0.9 of direct throughput);
- the list query's requests/s next to the same rows read with a prepared SQL statement over
  4 connections: the engine's cost.
After a warm-up of every variant (not counted), 5 rounds run each variant once, the gateway
and the direct run of a pair in alternating order; medians are reported, with the machine's
idle CPU during each run. Run as root:
    sudo .venv/bin/python bench/graphql.py
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psycopg
from stack import idle_ticks, running_stack

from protoc_gen_crud.devstack import GraphqlServer

ROUTE = "/api/v1/graphql"
LIST = json.dumps({"query": "{ readings(first: 20, orderBy: ID_ASC) "
                            "{ nodes { id deviceId value note } } }"})
CREATE = json.dumps({"query": 'mutation { createReading(input: {reading: {deviceId: "b", '
                              'value: 1.5}}) { reading { id } } }'})
SQL = "SELECT id, device_id, value, note FROM reading ORDER BY id LIMIT 20"


def http_rate(host, port: int, body: str, seconds: float, clients: int) -> tuple[float, int]:
    """Requests/s of `body` POSTed on `clients` keep-alive connections by wrk (compiled, a
    fraction of the CPU a Python client takes, so that the load generator does not compete
    with what is measured), and how many requests completed. A GraphQL error in the answer is
    checked once before (wrk only counts statuses); any non-2xx answer fails the run."""
    with host.inside():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", ROUTE, body=body, headers={"Content-Type": "application/json"})
        reply = conn.getresponse()
        data = reply.read()
        conn.close()
    if reply.status != 200 or b'"errors"' in data:
        raise RuntimeError(f"{reply.status} {data[:300]!r}")
    with tempfile.TemporaryDirectory(prefix="crud-bench-") as folder:
        script = Path(folder) / "post.lua"
        script.write_text('wrk.method = "POST"\n'
                          'wrk.headers["Content-Type"] = "application/json"\n'
                          f"wrk.body = [==[{body}]==]\n")
        done = subprocess.run(
            host.command("wrk", "-t", str(min(clients, 2)), "-c", str(clients),
                         "-d", f"{seconds}s", "-s", str(script),
                         f"http://127.0.0.1:{port}{ROUTE}"),
            capture_output=True, text=True, check=True)
    failed = re.search(r"Non-2xx or 3xx responses: (\d+)", done.stdout)
    errors = re.search(r"Socket errors: .*", done.stdout)
    if failed or errors:
        raise RuntimeError(done.stdout)
    completed = int(re.search(r"(\d+) requests in", done.stdout).group(1))
    return float(re.search(r"Requests/sec:\s+([\d.]+)", done.stdout).group(1)), completed


def sql_rate(host, dsn: str, seconds: float, clients: int) -> float:
    counts = [0] * clients
    stop = time.monotonic() + seconds

    def client(index: int) -> None:
        with host.inside():
            conn = psycopg.connect(dsn, autocommit=True)
        with conn:
            while time.monotonic() < stop:
                conn.execute(SQL, prepare=True).fetchall()
                counts[index] += 1

    return _run(client, clients, seconds, counts)


def _run(client, clients: int, seconds: float, counts: list[int]) -> float:
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / max(seconds, time.monotonic() - started)


def count_rows(stack) -> int:
    with stack.host.inside():
        conn = psycopg.connect(stack.pg.dsn(stack.database))
    with conn:
        return conn.execute("SELECT count(*) FROM reading").fetchone()[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=float, default=2, help="seconds per variant, first")
    args = parser.parse_args()
    with running_stack() as stack:
        stack.pg.run_psql(stack.database, "-c", "INSERT INTO reading (device_id, value) "
                          "SELECT 'd' || i, i FROM generate_series(1, 1000) AS i")
        url = f"postgres://authenticator@127.0.0.1:{stack.pg.port}/{stack.database}"
        server = GraphqlServer(stack.host, stack.generated / "graphql", url,
                               {"PGRST_JWT_SECRET": "b" * 32}).start()
        try:
            results: dict[str, list[float]] = {}
            idle: dict[str, list[float]] = {}
            # Not counted: the first requests of a fresh Node process run before its JIT
            # has compiled the paths (the first variant measured used to lose a third).
            direct = GraphqlServer.PORT
            for port, body in ((80, LIST), (direct, LIST), (80, CREATE), (direct, CREATE)):
                http_rate(stack.host, port, body, args.warmup, args.clients)
            pairs = ((("list via gateway", 80, LIST), ("list direct", direct, LIST)),
                     (("create via gateway", 80, CREATE), ("create direct", direct, CREATE)))
            for round_number in range(args.rounds):
                # Which of each pair goes first alternates between rounds: Node's speed
                # drifts over a run (JIT, garbage collection, the table growing with the
                # creates), and always measuring the gateway first would count the drift
                # for or against it every time.
                step = 1 if round_number % 2 == 0 else -1
                for name, port, body in (run for pair in pairs for run in pair[::step]):
                    rows_before = count_rows(stack)
                    idle_before = idle_ticks()
                    rate, completed = http_rate(stack.host, port, body, args.seconds,
                                                args.clients)
                    idle_after = idle_ticks()
                    idle.setdefault(name, []).append(100 * (idle_after[0] - idle_before[0])
                                                     / max(1, idle_after[1] - idle_before[1]))
                    if body is CREATE and count_rows(stack) - rows_before < completed:
                        raise RuntimeError(f"{name}: {completed} creates answered, "
                                           f"{count_rows(stack) - rows_before} rows made")
                    results.setdefault(name, []).append(rate)
                results.setdefault("list as prepared SQL", []).append(
                    sql_rate(stack.host, stack.pg.dsn(stack.database), args.seconds,
                             args.clients))
        finally:
            server.stop()
    median = {name: statistics.median(values) for name, values in results.items()}
    print(f"clients={args.clients} seconds={args.seconds} rounds={args.rounds}")
    for name, values in results.items():
        runs = ", ".join(f"{v:.0f}" for v in values)
        spare = (", machine idle " + ", ".join(f"{v:.0f}%" for v in idle[name])
                 if name in idle else "")
        print(f"  {name:22s} {median[name]:8.0f} requests/s  (runs: {runs}{spare})")
    for what in ("list", "create"):
        ratio = median[f"{what} via gateway"] / median[f"{what} direct"]
        print(f"  {what}: gateway/direct {ratio:.3f}  (target >= 0.9)")
    print(f"  list: PostGraphile/prepared SQL "
          f"{median['list direct'] / median['list as prepared SQL']:.3f}")


if __name__ == "__main__":
    main()
