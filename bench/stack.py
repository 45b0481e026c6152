"""Shared set-up for the real-time benchmarks: a private test host with PostgreSQL, Redis,
the PostgREST stand-in (for the gateway's permission check) and one generated backend."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from protoc_gen_crud import builder, textproto
from protoc_gen_crud.devstack import LocalStack, PostgresServer, RedisServer, TestHost
from protoc_gen_crud.generate import generate

TICKS = os.sysconf("SC_CLK_TCK")
ROOT = Path(__file__).resolve().parent.parent

CONFIG = """
database { name: "bench" }
entity {
  name: "reading"
  fields { name: "device_id" type: SQL_TYPE_TEXT constraints { not_null: true } }
  fields { name: "value" type: SQL_TYPE_DOUBLE constraints { not_null: true } }
  fields { name: "note" type: SQL_TYPE_TEXT }
  api { access { read: ["anon"] create: ["anon"] } }
  stream { %s}
}
api {
  # Every benchmark client connects from 127.0.0.1; per-address limits would refuse them.
  rate_limit { requests_per_second: 0 }
}
"""


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


def idle_ticks() -> tuple[int, int]:
    """The machine's idle and total CPU ticks so far (all cores)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return values[3] + values[4], sum(values)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


@contextlib.contextmanager
def running_stack(start_relay: bool = True, env: dict[str, str] | None = None,
                  max_len: int | None = 2_000_000):
    """The stack with the `reading` entity. Its stream keeps `max_len` entries: 2,000,000 by
    default, so that benchmarks counting what the relay wrote find every event in Redis;
    None for the product's default (100,000, trimmed about once a second)."""
    host = TestHost(f"crudbench{int(time.time()) % 100000}").enter()
    pg = PostgresServer({"fsync": "on", "synchronous_commit": "on"}).start()
    redis = RedisServer().start()
    work = Path(tempfile.mkdtemp(prefix="crud-bench-"))
    recorder = subprocess.Popen(
        host.command(sys.executable, str(ROOT / "tests" / "recorder.py"), "3000",
                     str(work / "requests.jsonl")),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stream = f"max_len: {max_len} " if max_len is not None else ""
    message, sources = textproto.load(CONFIG % stream, "bench.textproto")
    files = generate(builder.build(message, sources))
    for rel, text in files.items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_text(text)
    stack = LocalStack(work, host, pg, redis, "bench", env=env)
    try:
        pg.wait_ready()
        if start_relay:
            stack.up()
        else:
            pg.create_database("bench")
            stack.migrate()
        yield stack
    finally:
        with contextlib.suppress(Exception):
            stack.down()
        recorder.terminate()
        recorder.wait(10)
        redis.cleanup()
        pg.cleanup()
        host.leave()
        shutil.rmtree(work, ignore_errors=True)
