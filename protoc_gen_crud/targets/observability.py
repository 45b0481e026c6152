"""Observability target: `observability/` for the compose stack's `observability` profile.

Prometheus scrapes every component that exports metrics and evaluates alert rules; Grafana
is provisioned with both data sources and one dashboard per backend; Promtail ships every
container's log to Loki labelled with its compose service. All of it is data dumped with
PyYAML or json, checked in the test suite by promtool and against the metric names the
components really export.
"""

from __future__ import annotations

import json

from ..model import Backend
from ..rendering import HEADER, dump_yaml
from .openresty import METRICS_PORT as GATEWAY_METRICS_PORT
from .postgrest import ADMIN_PORT as POSTGREST_ADMIN_PORT
from .relay import METRICS_PORT as RELAY_METRICS_PORT

FOLDER = "observability"
DAPR_METRICS_PORT = 9090
ARROYO_ADMIN_PORT = 5114


def scrape_targets(backend: Backend) -> dict[str, str]:
    """Prometheus job -> host:port of its /metrics."""
    jobs = {
        "gateway": f"proxy:{GATEWAY_METRICS_PORT}",
        "relay": f"relay:{RELAY_METRICS_PORT}",
        "postgrest": f"crud:{POSTGREST_ADMIN_PORT}",
        "dapr": f"mesh:{DAPR_METRICS_PORT}",
        "postgres": "postgres-exporter:9187",
        "redis": "redis-exporter:9121",
        "prometheus": "localhost:9090",
    }
    if backend.rules:
        jobs["arroyo"] = f"arroyo:{ARROYO_ADMIN_PORT}"
    return dict(sorted(jobs.items()))


def prometheus(backend: Backend) -> dict:
    return {
        "global": {"scrape_interval": "15s", "evaluation_interval": "15s",
                   "external_labels": {"backend": backend.database.name}},
        "rule_files": ["alerts.yml"],
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [target]}]}
                           for job, target in scrape_targets(backend).items()],
    }


def _alert(name: str, expr: str, duration: str, severity: str, summary: str) -> dict:
    return {"alert": name, "expr": expr, "for": duration, "labels": {"severity": severity},
            "annotations": {"summary": summary}}


def alerts(backend: Backend) -> dict:
    five_xx = ('sum(rate(crud_gateway_requests_total{status=~"5.."}[5m])) / '
               "clamp_min(sum(rate(crud_gateway_requests_total[5m])), 1e-9)")
    rules = [
        _alert("ComponentDown", "up == 0", "2m", "critical",
               "{{ $labels.job }} ({{ $labels.instance }}) does not answer its metrics"),
        _alert("RelayDisconnected", "crud_relay_up == 0", "1m", "critical",
               "the change relay lost its {{ $labels.backend }} connection"),
        _alert("RelayLagging", "crud_relay_lag_seconds > 30", "5m", "warning",
               "changes reach Redis {{ $value | humanizeDuration }} after their commit"),
        _alert("ReplicationSlotRetention", "crud_relay_lag_bytes > 1e9", "10m", "critical",
               "the replication slot holds back {{ $value | humanize1024 }}B of WAL"),
        _alert("ReplicationSlotInactive", "pg_replication_slot_slot_is_active == 0", "5m",
               "warning",
               "replication slot {{ $labels.slot_name }} has no consumer and retains WAL"),
        _alert("GatewayErrors", f"{five_xx} > 0.05", "5m", "warning",
               "more than 5% of API requests fail with 5xx"),
        _alert("ChangeStreamBlocked", "crud_relay_foreign_entry == 1", "1m", "critical",
               "a foreign entry blocks crud.{{ $labels.entity }}: the relay holds its "
               "changes until it is removed"),
        _alert("ConsumerGroupLagging",
               "crud_relay_consumer_group_lag / on(entity) group_left "
               "crud_relay_retention_max_len > 0.5", "5m", "warning",
               "{{ $labels.group }} is more than half the retention cap behind on "
               "crud.{{ $labels.entity }}"),
        _alert("ConsumerGroupLostChanges",
               "increase(crud_relay_consumer_group_trimmed_total[10m]) > 0", "0m", "critical",
               "{{ $labels.group }} lost changes of crud.{{ $labels.entity }} to the retention "
               "cap: reload a snapshot"),
        _alert("ConsumerGroupStuck",
               "min_over_time(crud_relay_consumer_group_pending[10m]) > 0 and "
               "crud_relay_consumer_group_lag == 0", "5m", "warning",
               "{{ $labels.group }} has left changes of crud.{{ $labels.entity }} "
               "unacknowledged for 10 minutes: the app refuses or fails them"),
        _alert("StreamGapAnnounced", "increase(crud_gateway_sse_gaps_total[10m]) > 0", "0m",
               "warning", "an SSE client of {{ $labels.entity }} (e.g. an Arroyo pipeline) "
               "resumed after changes it missed were trimmed: its results lack them"),
        _alert("RedisDown", "redis_up == 0", "1m", "critical", "Redis does not answer"),
        _alert("DatabaseDown", "pg_up == 0", "1m", "critical", "PostgreSQL does not answer"),
    ]
    return {"groups": [{"name": "crud", "rules": rules}]}


# ------------------------------------------------------------------------ grafana
PROMETHEUS_UID = "crud-prometheus"
LOKI_UID = "crud-loki"


def datasources() -> dict:
    return {"apiVersion": 1, "datasources": [
        {"name": "Prometheus", "type": "prometheus", "uid": PROMETHEUS_UID, "access": "proxy",
         "url": "http://prometheus:9090", "isDefault": True},
        {"name": "Loki", "type": "loki", "uid": LOKI_UID, "access": "proxy",
         "url": "http://loki:3100"},
    ]}


def dashboard_provider() -> dict:
    return {"apiVersion": 1, "providers": [{
        "name": "crud", "folder": "protoc-gen-crud", "type": "file",
        "disableDeletion": True, "updateIntervalSeconds": 30,
        "options": {"path": "/var/lib/grafana/dashboards"}}]}


def _panel(panel_id: int, title: str, exprs: list[tuple[str, str]], x: int, y: int,
           unit: str = "short", kind: str = "timeseries") -> dict:
    return {
        "id": panel_id, "type": kind, "title": title,
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "datasource": {"type": "prometheus", "uid": PROMETHEUS_UID},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [{"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend,
                     "datasource": {"type": "prometheus", "uid": PROMETHEUS_UID}}
                    for i, (expr, legend) in enumerate(exprs)],
    }


def dashboard(backend: Backend) -> dict:
    db = backend.database.name
    routes = "|".join(sorted({e.name for e in backend.entities}
                             | {f"{e.name}_item" for e in backend.entities}))
    route = f'route=~"{routes}"'
    panels = [
        _panel(1, "Requests per entity route", [
            (f"sum by (route) (rate(crud_gateway_requests_total{{{route}}}[5m]))",
             "{{route}}")], 0, 0, "reqps"),
        _panel(2, "Latency p95 per entity route", [
            ("histogram_quantile(0.95, sum by (route, le) "
             f"(rate(crud_gateway_request_duration_seconds_bucket{{{route}}}[5m])))",
             "{{route}}")], 12, 0, "s"),
        _panel(3, "Errors per entity route (4xx, 5xx)", [
            (f'sum by (route) (rate(crud_gateway_requests_total{{{route},status=~"5.."}}[5m]))',
             "{{route}} 5xx"),
            (f'sum by (route) (rate(crud_gateway_requests_total{{{route},status=~"4.."}}[5m]))',
             "{{route}} 4xx")], 0, 8, "reqps"),
        _panel(4, "Change stream lag", [
            ("crud_relay_lag_seconds", "commit to Redis (s)"),
            ("histogram_quantile(0.95, sum by (le) "
             "(rate(crud_relay_commit_to_redis_seconds_bucket[5m])))", "p95 commit to Redis")],
            12, 8, "s"),
        _panel(5, "Changes captured per entity", [
            ("sum by (entity) (rate(crud_relay_events_total[5m]))", "{{entity}}"),
            ("rate(crud_relay_errors_total[5m])", "relay errors")], 0, 16, "ops"),
        _panel(6, "WAL retained by the replication slot", [
            ("crud_relay_lag_bytes", "relay slot")], 12, 16, "bytes"),
        _panel(7, "SSE subscribers and events", [
            ("sum by (entity) (crud_gateway_sse_subscribers)", "{{entity}} subscribers"),
            ("sum by (entity) (rate(crud_gateway_sse_events_total[5m]))",
             "{{entity}} events/s")], 0, 24),
        _panel(8, "Aggregation results published", [
            ("sum by (channel) (rate(crud_gateway_aggregates_published_total[5m]))",
             "{{channel}}")], 12, 24, "ops"),
        _panel(9, "Database", [
            ("pg_up", "up"),
            (f'pg_stat_database_numbackends{{datname="{db}"}}', "connections"),
            ("pg_replication_slot_slot_is_active", "slot {{slot_name}} active")], 0, 32),
        _panel(10, "Redis", [
            ("redis_up", "up"), ("redis_connected_clients", "clients"),
            ("redis_memory_used_bytes / 1048576", "memory (MiB)")], 12, 32),
        _panel(11, "Components up", [("up", "{{job}}")], 0, 40, kind="stat"),
        {
            "id": 12, "type": "logs", "title": "Logs",
            "gridPos": {"h": 10, "w": 24, "x": 0, "y": 48},
            "datasource": {"type": "loki", "uid": LOKI_UID},
            "targets": [{"refId": "A", "expr": '{service=~"$service"}',
                         "datasource": {"type": "loki", "uid": LOKI_UID}}],
        },
    ]
    return {
        "uid": f"crud-{db}"[:40],
        "title": f"{db}: protoc-gen-crud backend",
        "tags": ["protoc-gen-crud"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [{
            "name": "service", "type": "query", "label": "Service",
            "datasource": {"type": "loki", "uid": LOKI_UID},
            "query": "label_values(service)", "includeAll": True, "multi": True,
            "current": {"text": "All", "value": "$__all"}, "refresh": 1,
        }]},
        "panels": panels,
    }


# ------------------------------------------------------------------------------ logs
def loki() -> dict:
    return {
        "auth_enabled": False,
        "server": {"http_listen_port": 3100},
        "common": {"path_prefix": "/loki", "replication_factor": 1,
                   "ring": {"kvstore": {"store": "inmemory"}},
                   "storage": {"filesystem": {"chunks_directory": "/loki/chunks",
                                              "rules_directory": "/loki/rules"}}},
        "schema_config": {"configs": [{
            "from": "2024-01-01", "store": "tsdb", "object_store": "filesystem",
            "schema": "v13", "index": {"prefix": "index_", "period": "24h"}}]},
        "limits_config": {"retention_period": "168h"},
        "compactor": {"working_directory": "/loki/compactor", "retention_enabled": True,
                      "delete_request_store": "filesystem"},
    }


def promtail(backend: Backend) -> dict:
    project = backend.database.name.replace("_", "-")
    return {
        "server": {"http_listen_port": 9080, "grpc_listen_port": 0},
        "positions": {"filename": "/tmp/positions.yaml"},
        "clients": [{"url": "http://loki:3100/loki/api/v1/push"}],
        "scrape_configs": [{
            "job_name": "compose",
            "docker_sd_configs": [{
                "host": "unix:///var/run/docker.sock", "refresh_interval": "5s",
                "filters": [{"name": "label",
                             "values": [f"com.docker.compose.project={project}"]}],
            }],
            "relabel_configs": [
                {"source_labels": ["__meta_docker_container_label_com_docker_compose_service"],
                 "target_label": "service"},
                {"source_labels": ["__meta_docker_container_name"], "regex": "/(.*)",
                 "target_label": "container"},
            ],
        }],
    }


def _yaml(data: dict) -> str:
    return HEADER + dump_yaml(data)


def render(backend: Backend) -> dict[str, str]:
    grafana = f"{FOLDER}/grafana"
    return {
        f"{FOLDER}/prometheus/prometheus.yml": _yaml(prometheus(backend)),
        f"{FOLDER}/prometheus/alerts.yml": _yaml(alerts(backend)),
        f"{grafana}/provisioning/datasources/datasources.yml": _yaml(datasources()),
        f"{grafana}/provisioning/dashboards/dashboards.yml": _yaml(dashboard_provider()),
        f"{grafana}/dashboards/{backend.database.name}.json":
            json.dumps(dashboard(backend), indent=2) + "\n",
        f"{FOLDER}/loki/loki.yml": _yaml(loki()),
        f"{FOLDER}/loki/promtail.yml": _yaml(promtail(backend)),
    }
