"""The observability profile: Prometheus files through promtool (config, rules, and an alert
unit test), Grafana dashboards whose every query names a metric that something in the stack
exports, and log shipping labelled by compose service."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request

import psycopg
import pytest
import yaml

from .support import EXAMPLES, EXAMPLES_DIR, from_textproto, model_of, write_tree

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
# Metrics of the exporters in the profile, as their documentation names them:
# postgres_exporter (pg_up, stat_database and replication_slot collectors) and
# redis_exporter; `up` is Prometheus's own.
EXPORTER_METRICS = {
    "up", "pg_up", "pg_stat_database_numbackends", "pg_replication_slot_slot_is_active",
    "redis_up", "redis_connected_clients", "redis_memory_used_bytes",
}
PROMQL_WORDS = {
    "sum", "by", "without", "rate", "irate", "increase", "min_over_time", "histogram_quantile",
    "clamp_min",
    "avg", "max", "min", "count", "on", "ignoring", "and", "or", "unless", "bool",
    "humanize1024", "humanizeDuration", "group_left", "group_right",
}


def observability(name: str, tmp_path):
    files = from_textproto(EXAMPLES_DIR / name / f"{name}.textproto")
    return write_tree(files, tmp_path) / "observability"


def metric_names(promql: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    text = re.sub(r'"[^"]*"', "", promql)
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", text)  # grouping labels
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"(?<![A-Za-z_:])\d+(\.\d+)?([eE][-+]?\d+)?", "", text)  # numbers
    names = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", text))
    return {n for n in names if n not in PROMQL_WORDS}


@pytest.mark.parametrize("name", EXAMPLES)
def test_promtool_accepts_config_and_rules(name, tmp_path):
    folder = observability(name, tmp_path) / "prometheus"
    config = subprocess.run([PROMTOOL, "check", "config", "prometheus.yml"], cwd=folder,
                            capture_output=True, text=True)
    assert config.returncode == 0, config.stdout + config.stderr
    assert "SUCCESS" in config.stdout + config.stderr
    rules = subprocess.run([PROMTOOL, "check", "rules", "alerts.yml"], cwd=folder,
                           capture_output=True, text=True)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    jobs = {c["job_name"] for c in yaml.safe_load(
        (folder / "prometheus.yml").read_text())["scrape_configs"]}
    assert {"gateway", "relay", "postgrest", "dapr", "postgres", "redis"} <= jobs
    assert ("arroyo" in jobs) == bool(model_of(name).rules)


def test_alerts_fire_as_intended(tmp_path):
    """promtool's rule unit tests: a lagging relay, a dead component and a 5xx burst alert;
    a healthy relay does not."""
    folder = observability("storefront", tmp_path) / "prometheus"
    (folder / "alerts_test.yml").write_text(yaml.safe_dump({
        "rule_files": ["alerts.yml"],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                {"series": "crud_relay_lag_seconds", "values": "60x10"},
                {"series": 'up{job="relay",instance="relay:9464"}', "values": "0x5"},
                {"series": 'crud_gateway_requests_total{route="product",status="500"}',
                 "values": "0+60x10"},
                {"series": 'crud_gateway_requests_total{route="product",status="200"}',
                 "values": "0+60x10"},
                {"series": 'crud_relay_up{backend="redis"}', "values": "1x10"},
            ],
            "alert_rule_test": [
                {"eval_time": "6m", "alertname": "RelayLagging", "exp_alerts": [{
                    "exp_labels": {"severity": "warning"},
                    "exp_annotations": {"summary": "changes reach Redis 1m 0s after their "
                                                   "commit"}}]},
                {"eval_time": "3m", "alertname": "ComponentDown", "exp_alerts": [{
                    "exp_labels": {"severity": "critical", "job": "relay",
                                   "instance": "relay:9464"},
                    "exp_annotations": {"summary": "relay (relay:9464) does not answer its "
                                                   "metrics"}}]},
                {"eval_time": "8m", "alertname": "GatewayErrors", "exp_alerts": [{
                    "exp_labels": {"severity": "warning"},
                    "exp_annotations": {"summary": "more than 5% of API requests fail with "
                                                   "5xx"}}]},
                {"eval_time": "8m", "alertname": "RelayDisconnected", "exp_alerts": []},
            ],
        }],
    }))
    done = subprocess.run([PROMTOOL, "test", "rules", "alerts_test.yml"], cwd=folder,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_change_stream_alerts_fire_as_intended(tmp_path):
    """Issue 12: a foreign entry blocking a stream, a consumer group past half its retention
    cap, and changes a group lost to the cap alert; a group keeping up does not."""
    folder = observability("storefront", tmp_path) / "prometheus"
    lag = 'crud_relay_consumer_group_lag{entity="product",group="%s"}'
    (folder / "change_alerts_test.yml").write_text(yaml.safe_dump({
        "rule_files": ["alerts.yml"],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                {"series": 'crud_relay_foreign_entry{entity="product"}', "values": "1x5"},
                {"series": 'crud_relay_retention_max_len{entity="product"}',
                 "values": "500000x10"},
                {"series": lag % "inventory", "values": "300000x10"},
                {"series": lag % "search-indexer", "values": "10x10"},
                {"series": 'crud_relay_consumer_group_trimmed_total{entity="product",'
                           'group="inventory"}', "values": "0 0 0 20 20 20"},
                # An app that reads but never acknowledges: nothing undelivered, pending stays.
                {"series": 'crud_relay_consumer_group_pending{entity="order_items",'
                           'group="billing"}', "values": "3x20"},
                {"series": 'crud_relay_consumer_group_lag{entity="order_items",'
                           'group="billing"}', "values": "0x20"},
                # One that keeps up: pending comes and goes.
                {"series": 'crud_relay_consumer_group_pending{entity="product",'
                           'group="search-indexer"}', "values": "2 0 1 0 2 0 1 0 2 0 1 0 2 0 1 0"},
                {"series": 'crud_gateway_sse_gaps_total{entity="product"}',
                 "values": "0 0 0 0 1 1 1"},
            ],
            "alert_rule_test": [
                {"eval_time": "2m", "alertname": "ChangeStreamBlocked", "exp_alerts": [{
                    "exp_labels": {"severity": "critical", "entity": "product"},
                    "exp_annotations": {"summary": "a foreign entry blocks crud.product: "
                                        "the relay holds its changes until it is removed"}}]},
                {"eval_time": "6m", "alertname": "ConsumerGroupLagging", "exp_alerts": [{
                    "exp_labels": {"severity": "warning", "entity": "product",
                                   "group": "inventory"},
                    "exp_annotations": {"summary": "inventory is more than half the "
                                        "retention cap behind on crud.product"}}]},
                {"eval_time": "4m", "alertname": "ConsumerGroupLostChanges", "exp_alerts": [{
                    "exp_labels": {"severity": "critical", "entity": "product",
                                   "group": "inventory"},
                    "exp_annotations": {"summary": "inventory lost changes of crud.product "
                                        "to the retention cap: reload a snapshot"}}]},
                {"eval_time": "2m", "alertname": "ConsumerGroupLostChanges", "exp_alerts": []},
                {"eval_time": "16m", "alertname": "ConsumerGroupStuck", "exp_alerts": [{
                    "exp_labels": {"severity": "warning", "entity": "order_items",
                                   "group": "billing"},
                    "exp_annotations": {"summary": "billing has left changes of "
                                        "crud.order_items unacknowledged for 10 minutes: the "
                                        "app refuses or fails them"}}]},
                {"eval_time": "5m", "alertname": "StreamGapAnnounced", "exp_alerts": [{
                    "exp_labels": {"severity": "warning", "entity": "product"},
                    "exp_annotations": {"summary": "an SSE client of product (e.g. an Arroyo "
                                        "pipeline) resumed after changes it missed were "
                                        "trimmed: its results lack them"}}]},
                {"eval_time": "3m", "alertname": "StreamGapAnnounced", "exp_alerts": []},
            ],
        }],
    }))
    done = subprocess.run([PROMTOOL, "test", "rules", "change_alerts_test.yml"], cwd=folder,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def exported_metrics(stack) -> set[str]:
    """Metric families the running gateway and relay expose, after some traffic."""
    names = set()
    for port in (9145, 9464):
        with stack.host.inside():
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                          timeout=5).read().decode()
        for line in body.splitlines():
            if line.startswith("# TYPE "):
                family, kind = line.split()[2:4]
                names.add(family)
                if kind == "histogram":
                    names |= {f"{family}_bucket", f"{family}_sum", f"{family}_count"}
            elif line and not line.startswith("#"):
                names.add(re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", line).group())
    return names


def test_every_dashboard_and_alert_query_uses_exported_metrics(make_stack, tmp_path):
    files = from_textproto(EXAMPLES_DIR / "storefront" / "storefront.textproto")
    stack = make_stack(files, "obs_storefront")  # relay and gateway running
    with psycopg.connect(stack.pg.dsn(stack.database), autocommit=True) as conn:
        conn.execute("INSERT INTO shop.customer (email, name, user_id) VALUES "
                     "('o@x.io', 'O', 'o')")
    time.sleep(1.5)
    exported = exported_metrics(stack) | EXPORTER_METRICS
    assert {"crud_gateway_requests_total", "crud_relay_lag_seconds"} <= exported
    folder = write_tree(files, tmp_path / "files") / "observability"
    (dashboard_file,) = (folder / "grafana" / "dashboards").glob("*.json")
    dashboard = json.loads(dashboard_file.read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]
               if p["datasource"]["type"] == "prometheus"]
    assert len(queries) >= 15
    rules = yaml.safe_load((folder / "prometheus" / "alerts.yml").read_text())
    queries += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    for query in queries:
        assert metric_names(query), query
        assert metric_names(query) <= exported, (query, metric_names(query) - exported)
    titles = {p["title"] for p in dashboard["panels"]}
    assert {"Requests per entity route", "Latency p95 per entity route", "Change stream lag",
            "SSE subscribers and events", "Aggregation results published", "Database",
            "Redis", "Logs"} <= titles
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_metric_name_extraction_sees_every_name():
    assert metric_names('histogram_quantile(0.95, sum by (route, le) (rate('
                        'crud_gateway_request_duration_seconds_bucket{route=~"a|b"}[5m])))') \
        == {"crud_gateway_request_duration_seconds_bucket"}
    assert metric_names("redis_memory_used_bytes / 1048576 > 1e-9") == {
        "redis_memory_used_bytes"}
    assert metric_names("rate(pg2_x[5m]) + unknown_name") == {"pg2_x", "unknown_name"}


@pytest.mark.parametrize("name", EXAMPLES)
def test_grafana_provisioning_and_log_labels(name, tmp_path):
    folder = observability(name, tmp_path)
    sources = yaml.safe_load((folder / "grafana/provisioning/datasources/datasources.yml")
                             .read_text())["datasources"]
    uids = {s["uid"]: s["type"] for s in sources}
    (dashboard_file,) = (folder / "grafana" / "dashboards").glob("*.json")
    dashboard = json.loads(dashboard_file.read_text())
    for panel in dashboard["panels"]:
        assert uids[panel["datasource"]["uid"]] == panel["datasource"]["type"]
    promtail = yaml.safe_load((folder / "loki" / "promtail.yml").read_text())
    (job,) = promtail["scrape_configs"]
    service = next(r for r in job["relabel_configs"] if r["target_label"] == "service")
    assert service["source_labels"] == [
        "__meta_docker_container_label_com_docker_compose_service"]
    compose = yaml.safe_load((folder.parent / "compose.yml").read_text())
    project = job["docker_sd_configs"][0]["filters"][0]["values"][0]
    assert project == f"com.docker.compose.project={compose['name']}"
