"""Insert throughput into a generated, captured table as a ratio to a bare table.

Both tables have the same columns; the generated one has its audit trigger, constraints,
REPLICA IDENTITY FULL, is in the publication, and crud-relay is streaming it to Redis, whose
stream keeps the product's default 100,000 entries (--max-len to change). The bare one has
none of that. pgbench runs the same single-row INSERT against each, alternating,
with fsync on, 5 rounds after a VACUUM and a CHECKPOINT each, medians.
Run as root: sudo .venv/bin/python bench/capture_insert.py
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from stack import TICKS, descendants, idle_ticks, processes, running_stack


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def cpu_groups(stack, table: dict[int, tuple[int, int]]) -> dict[str, list[int]]:
    """The processes the capture path runs in: the relay, PostgreSQL's WAL sender (logical
    decoding for the relay) and Redis, and the rest of PostgreSQL (pgbench's backends)."""
    postmaster = int((stack.pg.data / "postmaster.pid").read_text().split()[0])
    postgres = descendants(table, postmaster)
    walsender = [pid for pid in postgres if b"walsender" in _cmdline(pid)]
    return {"relay": descendants(table, stack.relay.process.pid) if stack.relay else [],
            "walsender": walsender, "redis": [stack.redis.process.pid],
            "other postgres": [pid for pid in postgres if pid not in walsender]}


def tps(stack, table: str, seconds: int, clients: int) -> tuple[float, dict[str, float]]:
    """pgbench's rate, and the CPU (% of one core) each part used meanwhile, with the
    machine's idle share and pgbench's own CPU."""
    with tempfile.TemporaryDirectory(prefix="crud-bench-") as folder:
        script = Path(folder) / "insert.sql"
        script.write_text(f"INSERT INTO {table} (device_id, value, note) "
                          "VALUES ('dev-' || :client_id, random() * 100, 'bench');\n")
        table_before, idle_before = processes(), idle_ticks()
        started = time.monotonic()
        bench = subprocess.Popen(
            [str(stack.pg.bin / "pgbench"), "-n", "-f", str(script), "-c", str(clients),
             "-j", str(min(clients, 2)), "-T", str(seconds), "-h", "127.0.0.1",
             "-p", str(stack.pg.port), "-U", "postgres", stack.database],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        last = table_before
        while bench.poll() is None:
            last = processes()  # pgbench's ticks are gone once it exits
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        idle_after = idle_ticks()
        out, err = bench.communicate()
        if bench.returncode:
            raise RuntimeError(err)

    # Taken from the last look while pgbench ran: its backends and itself are gone after.
    groups = {**cpu_groups(stack, last), "pgbench": [bench.pid]}
    cpu = {name: 100 * sum(last[pid][1] - table_before.get(pid, (0, 0))[1]
                           for pid in pids if pid in last) / TICKS / elapsed
           for name, pids in groups.items()}
    cpu["machine idle"] = 100 * (idle_after[0] - idle_before[0]) / max(
        1, idle_after[1] - idle_before[1])
    return float(re.search(r"tps = ([\d.]+)", out).group(1)), cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--clients", default="1,4", help="comma-separated client counts")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-capture", action="store_true",
                        help="without crud-relay (and so without logical decoding): the "
                             "cost of the generated table itself")
    parser.add_argument("--max-len", type=int, default=None,
                        help="entries the stream keeps (default: the product's, 100,000, "
                             "trimmed by the relay about once a second)")
    args = parser.parse_args()
    with running_stack(start_relay=not args.no_capture, max_len=args.max_len) as stack:
        stack.pg.run_psql(stack.database, "-c", "CREATE TABLE bare (id uuid PRIMARY KEY "
                          "DEFAULT gen_random_uuid(), device_id text NOT NULL, value double "
                          "precision NOT NULL, note text, created_at timestamptz NOT NULL "
                          "DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now())")
        for clients in (int(c) for c in args.clients.split(",")):
            generated, bare = [], []
            print(f"clients={clients} seconds={args.seconds} rounds={args.rounds}")
            for round_number in range(1, args.rounds + 1):
                order = [("generated", "reading", generated), ("bare", "bare", bare)]
                # Alternating which goes first: a checkpoint or autovacuum falling into the
                # first half of every round would otherwise always count against one table.
                for name, table, rates in order[::1 if round_number % 2 else -1]:
                    # What pgbench does before its own runs (it vacuums its tables), for both
                    # tables alike, and a checkpoint: neither table's run inherits the other's
                    # dirty pages or an autovacuum of its rows.
                    stack.pg.run_psql(stack.database, "-c", "VACUUM ANALYZE reading, bare",
                                      "-c", "CHECKPOINT")
                    rate, cpu = tps(stack, table, args.seconds, clients)
                    rates.append(rate)
                    print(f"  round {round_number} {name:9s} {rate:7.0f}/s  cpu (% of one "
                          "core): " + ", ".join(f"{part} {percent:.0f}"
                                                for part, percent in cpu.items()))
            g, b = statistics.median(generated), statistics.median(bare)
            runs = {name: ", ".join(f"{x:.0f}" for x in values)
                    for name, values in (("bare", bare), ("generated", generated))}
            print(f"  bare table:      {b:9.0f} inserts/s  (runs: {runs['bare']})")
            print(f"  generated table: {g:9.0f} inserts/s  (runs: {runs['generated']})")
            print(f"  ratio generated/bare: {g / b:.3f}  (target >= 0.9)")
        if not args.no_capture:
            info = stack.redis.client().xinfo_stream("crud.reading")
            print(f"change events the relay wrote: {info['entries-added']} "
                  f"(the stream keeps {info['length']})")


if __name__ == "__main__":
    main()
