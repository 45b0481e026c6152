"""The relay's Prometheus metrics, rendered in the text exposition format."""

from __future__ import annotations

import threading
import time
from collections import Counter

from .values import commit_time

BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self):
        self.lock = threading.Lock()
        self.events: Counter[str] = Counter()
        self.errors = 0
        self.lag_bytes = 0
        self.lag_seconds = 0.0
        self.postgres_up = False
        self.redis_up = False
        self.latency_buckets = [0] * len(BUCKETS)
        self.latency_sum = 0.0
        self.latency_count = 0
        # entity -> id of a foreign entry blocking its stream (cleared when writes pass)
        self.foreign: dict[str, str] = {}
        # (entity, group) -> (lag, pending); (entity, group) -> entries trimmed unread
        self.groups: dict[tuple[str, str], tuple[int, int]] = {}
        self.trimmed_unread: Counter[tuple[str, str]] = Counter()
        self.retention: dict[str, int] = {}  # entity -> retention_max_len, for alerts

    def count(self, entity: str, events: int = 1) -> None:
        with self.lock:
            self.events[entity] += events

    def observe_commit(self, commit_us: int) -> None:
        """Seconds from the last written transaction's commit to Redis having it."""
        seconds = max(0.0, time.time() - commit_time(commit_us).timestamp())
        with self.lock:
            self.lag_seconds = seconds
            self.latency_sum += seconds
            self.latency_count += 1
            for i, le in enumerate(BUCKETS):
                if seconds <= le:
                    self.latency_buckets[i] += 1

    def observe_groups(self, entity: str, groups, lost: dict[str, int]) -> None:
        """The consumer groups of one entity's stream, after a trimming round."""
        with self.lock:
            for key in [k for k in self.groups if k[0] == entity]:
                del self.groups[key]
            for group in groups:
                self.groups[(entity, group.name)] = (group.lag, group.pending)
                self.trimmed_unread[(entity, group.name)] += 0  # the series exists from now
            for name, count in lost.items():
                self.trimmed_unread[(entity, name)] += count

    def render(self) -> str:
        with self.lock:
            lines = [
                "# HELP crud_relay_events_total Change events written to Redis, by entity.",
                "# TYPE crud_relay_events_total counter",
            ]
            lines += [f'crud_relay_events_total{{entity="{entity}"}} {n}'
                      for entity, n in sorted(self.events.items())]
            lines += [
                "# HELP crud_relay_errors_total Connection and write errors.",
                "# TYPE crud_relay_errors_total counter",
                f"crud_relay_errors_total {self.errors}",
                "# HELP crud_relay_lag_bytes WAL the server has that Redis does not yet.",
                "# TYPE crud_relay_lag_bytes gauge",
                f"crud_relay_lag_bytes {self.lag_bytes}",
                "# HELP crud_relay_lag_seconds Commit-to-Redis delay of the last transaction.",
                "# TYPE crud_relay_lag_seconds gauge",
                f"crud_relay_lag_seconds {self.lag_seconds:.6f}",
                "# HELP crud_relay_up Whether the relay is connected (by backend).",
                "# TYPE crud_relay_up gauge",
                f'crud_relay_up{{backend="postgres"}} {int(self.postgres_up)}',
                f'crud_relay_up{{backend="redis"}} {int(self.redis_up)}',
                "# HELP crud_relay_commit_to_redis_seconds Commit-to-Redis delay per batch.",
                "# TYPE crud_relay_commit_to_redis_seconds histogram",
            ]
            for le, n in zip(BUCKETS, self.latency_buckets, strict=True):
                lines.append(f'crud_relay_commit_to_redis_seconds_bucket{{le="{le}"}} {n}')
            lines += [
                f'crud_relay_commit_to_redis_seconds_bucket{{le="+Inf"}} {self.latency_count}',
                f"crud_relay_commit_to_redis_seconds_sum {self.latency_sum:.6f}",
                f"crud_relay_commit_to_redis_seconds_count {self.latency_count}",
                "# HELP crud_relay_foreign_entry Whether a foreign entry (not written by the "
                "relay) blocks the entity's stream; its changes are held until it is removed.",
                "# TYPE crud_relay_foreign_entry gauge",
            ]
            lines += [f'crud_relay_foreign_entry{{entity="{entity}"}} 1'
                      for entity in sorted(self.foreign)]
            lines += [
                "# HELP crud_relay_consumer_group_lag Entries not yet delivered to a consumer "
                "group (a Dapr app), by entity and group.",
                "# TYPE crud_relay_consumer_group_lag gauge",
            ]
            lines += [f'crud_relay_consumer_group_lag{{entity="{e}",group="{g}"}} {lag}'
                      for (e, g), (lag, _) in sorted(self.groups.items())]
            lines += [
                "# HELP crud_relay_consumer_group_pending Entries delivered to a consumer group "
                "and not yet acknowledged, by entity and group.",
                "# TYPE crud_relay_consumer_group_pending gauge",
            ]
            lines += [f'crud_relay_consumer_group_pending{{entity="{e}",group="{g}"}} {n}'
                      for (e, g), (_, n) in sorted(self.groups.items())]
            lines += [
                "# HELP crud_relay_retention_max_len Most entries kept for a lagging consumer "
                "group, by entity.",
                "# TYPE crud_relay_retention_max_len gauge",
            ]
            lines += [f'crud_relay_retention_max_len{{entity="{e}"}} {n}'
                      for e, n in sorted(self.retention.items())]
            lines += [
                "# HELP crud_relay_consumer_group_trimmed_total Entries removed by the "
                "retention cap before the consumer group had read and acknowledged them.",
                "# TYPE crud_relay_consumer_group_trimmed_total counter",
            ]
            lines += [f'crud_relay_consumer_group_trimmed_total{{entity="{e}",group="{g}"}} {n}'
                      for (e, g), n in sorted(self.trimmed_unread.items())]
        return "\n".join(lines) + "\n"
