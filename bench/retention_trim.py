"""Cost of one retention round of crud-relay on a long stream, against a plain XTRIM.

A stream keeps 100,000 entries (~600 bytes each, the default max_len) and has a consumer
group that has read and acknowledged everything, as Dapr's does when it keeps up; each round
100 changes arrive, the group reads them, and the relay's `retention.trim` runs. The baseline,
measured in the same run, is `XTRIM MINID` of the same number of entries without any group:
what trimming costs when nothing needs to be protected. Redis is started here on a free port,
as the stack runs it (append-only file, password), and removed afterwards.
Run: .venv/bin/python bench/retention_trim.py
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from protoc_gen_crud.devstack import RedisServer, free_port
from protoc_gen_crud.relay import retention

KEPT, NEW, ROUNDS = 100_000, 100, 10
PAYLOAD = json.dumps({"data": {"note": "y" * 560}})


def fill(client: redis.Redis, topic: str, first: int, count: int) -> int:
    pipe = client.pipeline(transaction=False)
    for i in range(first, first + count):
        pipe.xadd(topic, {"data": PAYLOAD}, id=f"{i}-0")
        if i % 5000 == 0:
            pipe.execute()
    pipe.execute()
    return first + count


def read_all(client: redis.Redis, topic: str) -> None:
    while got := client.xreadgroup("app", "c", {topic: ">"}, count=5000):
        client.xack(topic, "app", *[i for i, _ in got[0][1]])


def main() -> None:
    server = RedisServer(port=free_port()).start()  # as the stack runs it
    try:
        client = server.client()
        grouped, plain = "crud.grouped", "crud.plain"
        nxt = fill(client, grouped, 1, KEPT)
        fill(client, plain, 1, KEPT)
        client.xgroup_create(grouped, "app", id="0")
        read_all(client, grouped)
        relay, baseline = [], []
        for _ in range(ROUNDS):
            fill(client, plain, nxt, NEW)
            nxt = fill(client, grouped, nxt, NEW)
            read_all(client, grouped)
            start = time.perf_counter()
            retention.trim(client, grouped, grouped + ".trimmed", KEPT, 10 * KEPT)
            relay.append(time.perf_counter() - start)
            start = time.perf_counter()
            client.xtrim(plain, minid=f"{nxt - KEPT}-0", approximate=False)
            baseline.append(time.perf_counter() - start)
        assert client.xlen(grouped) == client.xlen(plain) == KEPT
        print(f"stream of {KEPT:,} entries, {NEW} new per round, {ROUNDS} rounds")
        print("relay trim round (ms): " + ", ".join(f"{t * 1000:.2f}" for t in relay))
        print("plain XTRIM (ms):      " + ", ".join(f"{t * 1000:.2f}" for t in baseline))
        ratio = statistics.median(relay) / statistics.median(baseline)
        print(f"median {statistics.median(relay) * 1000:.2f} ms vs "
              f"{statistics.median(baseline) * 1000:.2f} ms: ratio {ratio:.1f}")
    finally:
        server.cleanup()


if __name__ == "__main__":
    main()
