"""Insert throughput into a generated, captured table as a ratio to a bare table.

Both tables have the same columns; the generated one has its audit trigger, constraints,
REPLICA IDENTITY FULL, is in the publication, and crud-relay is streaming it to Redis. The
bare one has none of that. pgbench runs the same single-row INSERT against each, alternating,
with fsync on. Run as root: sudo .venv/bin/python bench/capture_insert.py
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import tempfile
from pathlib import Path

from stack import running_stack


def tps(stack, table: str, seconds: int, clients: int) -> float:
    with tempfile.TemporaryDirectory(prefix="crud-bench-") as folder:
        script = Path(folder) / "insert.sql"
        script.write_text(f"INSERT INTO {table} (device_id, value, note) "
                          "VALUES ('dev-' || :client_id, random() * 100, 'bench');\n")
        done = subprocess.run(
            [str(stack.pg.bin / "pgbench"), "-n", "-f", str(script), "-c", str(clients),
             "-j", str(min(clients, 2)), "-T", str(seconds), "-h", "127.0.0.1",
             "-p", str(stack.pg.port), "-U", "postgres", stack.database],
            capture_output=True, text=True, check=True)
    return float(re.search(r"tps = ([\d.]+)", done.stdout).group(1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--clients", default="1,4", help="comma-separated client counts")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with running_stack() as stack:
        stack.pg.run_psql(stack.database, "-c", "CREATE TABLE bare (id uuid PRIMARY KEY "
                          "DEFAULT gen_random_uuid(), device_id text NOT NULL, value double "
                          "precision NOT NULL, note text, created_at timestamptz NOT NULL "
                          "DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now())")
        for clients in (int(c) for c in args.clients.split(",")):
            generated, bare = [], []
            for _ in range(args.rounds):
                generated.append(tps(stack, "reading", args.seconds, clients))
                bare.append(tps(stack, "bare", args.seconds, clients))
            g, b = statistics.median(generated), statistics.median(bare)
            runs = {name: ", ".join(f"{x:.0f}" for x in values)
                    for name, values in (("bare", bare), ("generated", generated))}
            print(f"clients={clients} seconds={args.seconds} rounds={args.rounds}")
            print(f"  bare table:      {b:9.0f} inserts/s  (runs: {runs['bare']})")
            print(f"  generated table: {g:9.0f} inserts/s  (runs: {runs['generated']})")
            print(f"  ratio generated/bare: {g / b:.3f}  (target >= 0.9)")
        print(f"change events the relay wrote: {stack.redis.client().xlen('crud.reading')}")


if __name__ == "__main__":
    main()
