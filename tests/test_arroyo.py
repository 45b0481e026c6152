"""Arroyo pipelines: parsed by sqlparser-rs, planned and executed by DataFusion, their results
upserted into the output tables on PostgreSQL, and registered through Arroyo's REST API.

Arroyo itself has no binary for this machine; what stands in for it is said per test.
"""

from __future__ import annotations

import functools
import json
import random
import re
import statistics
from collections import defaultdict
from datetime import datetime, timedelta

import pytest
import sqloxide

from protoc_gen_crud.model import Rule

from . import arroyo_harness as harness
from .support import EXAMPLES, EXAMPLES_DIR, from_text, from_textproto, model_of


@functools.cache
def example_files(name: str) -> dict[str, str]:
    """An example's generated files, generated once per session (tests must not mutate)."""
    return from_textproto(EXAMPLES_DIR / name / f"{name}.textproto")


PIPELINES = [(name, rel) for name in EXAMPLES for rel in sorted(example_files(name))
             if rel.startswith("arroyo-queries/") and rel.endswith(".sql")]


def pipeline_sql(name: str, rule: str) -> str:
    files = example_files(name)
    return next(text for rel, text in files.items()
                if rel.startswith("arroyo-queries/") and rel.endswith(f"_{rule}.sql"))


@pytest.mark.parametrize(("name", "rel"), PIPELINES, ids=[f"{n}:{r[15:-4]}" for n, r in PIPELINES])
def test_every_pipeline_parses_and_plans(name, rel):
    sql = example_files(name)[rel]
    assert sqloxide.parse_sql(sql, dialect="generic")
    view = harness.plan(sql)
    assert view.names[:2] == ["window_start", "window_end"] and view.names[-1] == "value"


def test_the_seed_rules_are_all_pipelines():
    """product_analytics, revenue_tracking, the multi-field custom function, daily_sales and
    sensor_averages, as the seed writes them."""
    wanted = {("product", "product_analytics"), ("storefront", "revenue_tracking"),
              ("storefront", "order_metrics"), ("order", "daily_sales"),
              ("sensor_reading", "sensor_averages")}
    for name, rule in wanted:
        assert harness.plan(pipeline_sql(name, rule))
    analytics = pipeline_sql("product", "product_analytics")
    assert "tumble(INTERVAL '5 minutes')" in analytics
    assert "(table_name = 'product' AND action = 'I')" in analytics
    # The seed's webhook_url is PostgREST's own endpoint of the output table: one sink.
    assert analytics.count("connector = 'webhook'") == 1
    assert "endpoint = 'http://crud:3000/product_metrics'" in analytics
    assert "Prefer: resolution=merge-duplicates" in analytics
    averages = pipeline_sql("sensor_reading", "sensor_averages")
    assert "hop(INTERVAL '15 minutes', INTERVAL '1 hour')" in averages
    custom = pipeline_sql("storefront", "order_metrics")
    assert "named_struct('total_revenue', SUM(price * quantity)" in custom
    assert "json_build_object" not in custom
    # Rules without outputs publish to /stream/<rule>.
    daily = pipeline_sql("order", "daily_sales")
    assert "/publish/daily_sales'" in daily and "tumble(INTERVAL '1 day')" in daily
    revenue = pipeline_sql("storefront", "revenue_tracking")
    assert {"http://crud:3000/revenue_metrics", "http://analytics:8080/revenue",
            "http://proxy:9145/publish/revenue"} <= set(re.findall(r"endpoint = '([^']+)'",
                                                                   revenue))


def test_secrets_are_environment_references():
    for name, rel in PIPELINES:
        sql = example_files(name)[rel]
        for headers in re.findall(r"headers = '([^']*)'", sql):
            for value in re.findall(r"Authorization: Bearer (.*?)(?:,|$)", headers):
                assert value == "{{ CRUD_PIPELINE_TOKEN }}", (rel, value)


@pytest.mark.parametrize("mistake", ["unknown column", "ungrouped column", "sink arity",
                                     "sink type"])
def test_planning_catches_mistakes(mistake):
    """The harness is only worth something if a broken pipeline fails it."""
    sql = pipeline_sql("pipelines", "tumbling_sum")
    broken = {
        "unknown column": sql.replace('sum("amount")', 'sum("amount_typo")'),
        "ungrouped column": sql.replace('sum("amount") AS value', '"note" AS value'),
        "sink arity": sql.replace('    "value" BIGINT\n', '    "value" BIGINT,\n    "x" TEXT\n'),
        "sink type": sql.replace('    "value" BIGINT\n', '    "value" TEXT\n'),
    }[mistake]
    assert broken != sql
    with pytest.raises(Exception):  # noqa: B017 - DataFusion's error or the harness's assert
        harness.plan(broken)


# ------------------------------------------------------------------ window semantics
MATRIX = model_of("pipelines")
START = datetime(2026, 11, 24, 10, 0, 0)


def recorded_events(count: int = 400, seed: int = 11) -> list[dict]:
    """Change events of `metric` in commit order, with gaps long enough to end sessions and
    the gateway's clock ticks mixed in."""
    rng = random.Random(seed)
    t, events = START, []
    for i in range(count):
        t += timedelta(milliseconds=rng.randint(100, 15000))
        if rng.random() < 0.06:
            t += timedelta(seconds=rng.randint(46, 120))
        if rng.random() < 0.1:
            events.append({"table_name": "metric", "action": "T", "commit_time": t})
            continue
        events.append({
            "id": f"{i:08d}-0000-4000-8000-000000000000", "device": rng.choice("abc"),
            "temperature": rng.choice([None, round(rng.uniform(-5, 40), 2)]),
            "amount": rng.choice([None, -3, 0, 1, 2, 5, 9]),
            "price": rng.choice([None, 1.5, 10.0, 12.25]),
            "note": rng.choice([None, "x", "y", "zz"]),
            "created_at": t, "updated_at": t, "table_name": "metric",
            "action": rng.choice("IIIUUD"), "commit_time": t, "commit_lsn": f"0/{i:X}",
        })
    return events


WHERE = {  # the matrix's conditions, evaluated independently in Python
    "": lambda e: True,
    "action = 'I'": lambda e: e["action"] == "I",
    "action IN ('I', 'U')": lambda e: e["action"] in ("I", "U"),
    "amount > 0 AND note IS NOT NULL": lambda e: (e["amount"] is not None and e["amount"] > 0
                                                  and e["note"] is not None),
}
HAVING = {"": lambda v: True, "value > 5": lambda v: v is not None and v > 5,
          "value >= 10": lambda v: v is not None and v >= 10}


def windows_of(rule: Rule, rows: list[dict]) -> dict[tuple, list[dict]]:
    """(start, end, group...) -> the rows in that window."""
    w = rule.window
    found: dict[tuple, list[dict]] = defaultdict(list)
    epoch = datetime(1970, 1, 1)

    def floor(t: datetime, size: int) -> datetime:
        seconds = int((t - epoch).total_seconds())
        return epoch + timedelta(seconds=seconds - seconds % size)

    by_group: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        by_group[tuple(row[g] for g in rule.group_by)].append(row)
    for group, members in by_group.items():
        if w.type == "TUMBLING":
            for row in members:
                start = floor(row["commit_time"], w.seconds)
                found[(start, start + timedelta(seconds=w.seconds), *group)].append(row)
        elif w.type == "SLIDING":
            for row in members:
                last = floor(row["commit_time"], w.slide_seconds)
                for k in range(w.seconds // w.slide_seconds):
                    start = last - timedelta(seconds=k * w.slide_seconds)
                    found[(start, start + timedelta(seconds=w.seconds), *group)].append(row)
        else:
            gap = timedelta(seconds=w.seconds)
            session: list[dict] = []
            for row in sorted(members, key=lambda r: r["commit_time"]):
                if session and row["commit_time"] - session[-1]["commit_time"] > gap:
                    found[(session[0]["commit_time"], session[-1]["commit_time"] + gap,
                           *group)] = session
                    session = []
                session.append(row)
            if session:
                found[(session[0]["commit_time"], session[-1]["commit_time"] + gap,
                       *group)] = session
    return found


def aggregate(rule: Rule, rows: list[dict]):
    def present(field):
        return [r[field] for r in rows if r[field] is not None]
    match rule.function:
        case "COUNT":
            return len(rows)
        case "SUM":
            return sum(present(rule.target_field)) if present(rule.target_field) else None
        case "AVG":
            values = present(rule.target_field)
            return statistics.fmean(values) if values else None
        case "MIN":
            return min(present(rule.target_field), default=None)
        case "MAX":
            return max(present(rule.target_field), default=None)
        case "COUNT_DISTINCT":
            return len(set(present(rule.target_field)))
        case "STRING_AGG":
            values = present(rule.target_field)
            return rule.separator.join(sorted(values)) if values else None
        case "CUSTOM":
            products = [r["amount"] * r["price"] for r in rows
                        if r["amount"] is not None and r["price"] is not None]
            temperatures = present("temperature")
            return {"n": len(rows), "total": sum(products) if products else None,
                    "hottest": max(temperatures, default=None)}
    raise AssertionError(rule.function)


def normal(value, rule: Rule):
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {k: normal(v, rule) for k, v in value.items()}
    if isinstance(value, str) and rule.function == "STRING_AGG":
        return rule.separator.join(sorted(value.split(rule.separator)))
    return value


def expected_results(rule: Rule, events: list[dict]) -> set:
    rows = [e for e in events if e["action"] != "T" and WHERE[rule.where](e)]
    results = set()
    for key, members in windows_of(rule, rows).items():
        value = aggregate(rule, members)
        if HAVING[rule.having](value):
            results.add((*key, json.dumps(normal(value, rule), sort_keys=True)))
    return results


def engine_results(rule: Rule, events: list[dict]) -> set:
    sql = pipeline_sql("pipelines", rule.name)
    rows = harness.execute(sql, events, rule.group_by)
    return {(r["window_start"], r["window_end"], *(r[g] for g in rule.group_by),
             json.dumps(normal(r["value"], rule), sort_keys=True)) for r in rows}


@pytest.mark.parametrize("rule", MATRIX.rules, ids=[r.name for r in MATRIX.rules])
def test_window_semantics(rule):
    """DataFusion running the generated SELECT (windows as bucket arithmetic) gives what an
    independent computation of the rule gives, over the same recorded change events."""
    events = recorded_events()
    expected = expected_results(rule, events)
    assert len(expected) >= 3, "the recording should give this rule several windows"
    assert engine_results(rule, events) == expected


def test_ticks_do_not_count():
    rule = next(r for r in MATRIX.rules if r.name == "tumbling_sum")
    events = recorded_events()
    ticks_only = [e for e in events if e["action"] == "T"]
    assert ticks_only and harness.execute(pipeline_sql("pipelines", rule.name),
                                          [{**e, **dict.fromkeys(
                                              ("id", "device", "temperature", "amount",
                                               "price", "note", "created_at", "updated_at",
                                               "commit_lsn"))} for e in ticks_only],
                                          rule.group_by) == []


# ------------------------------------------------------------ output tables on PostgreSQL
def webhook_body(row: dict) -> str:
    """A result as Arroyo's JSON format sends it: RFC 3339 timestamps, structs as objects."""
    def encode(value):
        if isinstance(value, datetime):
            return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return value
    return json.dumps({k: encode(v) for k, v in row.items()})


def test_results_upsert_into_output_tables(database, tmp_path):
    """What the table sink posts, upserted the way PostgREST does for
    `Prefer: resolution=merge-duplicates`, as the pipeline role: twice, one row per window."""
    files = example_files("pipelines")
    assert database.migrate(files, tmp_path).returncode == 0
    events = recorded_events()
    tables = [r for r in MATRIX.rules if r.output_table]
    assert {r.function for r in tables} >= {"COUNT", "CUSTOM", "MAX", "AVG"}
    with database.connect(autocommit=True) as conn:
        for rule in tables:
            rows = harness.execute(pipeline_sql("pipelines", rule.name), events, rule.group_by)
            assert rows
            keys = ["window_start", "window_end", *rule.group_by]
            columns = ", ".join(f'"{c}"' for c in rows[0])
            update = ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in rows[0] if c not in keys)
            upsert = (f'INSERT INTO "{rule.output_table}" ({columns}) SELECT {columns} FROM '
                      f'json_populate_record(NULL::"{rule.output_table}", %s::json) ON CONFLICT '
                      f'({", ".join(keys)}) DO UPDATE SET {update}')
            for _replay in range(2):
                with conn.transaction():
                    conn.execute("SET LOCAL ROLE crud_pipeline")
                    for row in rows:
                        conn.execute(upsert, (webhook_body(row),))
            stored = conn.execute(f'SELECT count(*) FROM "{rule.output_table}"').fetchone()[0]
            assert stored == len(rows), rule.name
            if rule.function == "CUSTOM":
                value = conn.execute(f'SELECT value FROM "{rule.output_table}" ORDER BY '
                                     "window_start LIMIT 1").fetchone()[0]
                assert set(value) == {"n", "total", "hottest"}


# ------------------------------------------------------------------ expression checks
@pytest.mark.parametrize(("custom", "message"), [
    ("json_object_agg(device, amount)", "calls json_object_agg(), which Arroyo's SQL"),
    ("sum(amount) + nosuch", "refers to 'nosuch'"),
    ("amount + sum(amount)", "uses 'amount' outside an aggregate"),
])
def test_custom_sql_problems_are_reported(custom, message):
    from protoc_gen_crud.diagnostics import GenerationError
    text = ('entity { name: "m" fields { name: "amount" type: SQL_TYPE_INTEGER } }\n'
            'stream { aggregation { rules { name: "r" window { type: WINDOW_TYPE_TUMBLING '
            'interval: "1 minute" }\n function { type: FUNCTION_TYPE_CUSTOM custom_sql: "'
            + custom + '" } } } }\n')
    with pytest.raises(GenerationError) as caught:
        from_text(text)
    (problem,) = caught.value.diagnostics
    assert message in str(problem) and str(problem).startswith("test.textproto:3:")


# ------------------------------------------------------------------------ registration
class ArroyoApi:
    """A stand-in for Arroyo's REST API (the calls register.py makes, with the field names of
    Arroyo's api_types): pipelines page two at a time; a job is Created, then Running on the
    second look; a stop passes through Stopping; only a stopped pipeline can be deleted."""

    def __init__(self):
        import http.server
        import threading

        self.pipelines: dict[str, dict] = {}
        self.jobs: dict[str, dict] = {}
        self.calls: list[tuple[str, str]] = []
        self.fail: set[str] = set()
        self.created = 0
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def body(self):
                return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

            def do_GET(self):
                api.calls.append(("GET", self.path))
                if self.path.startswith("/api/v1/pipelines?") or self.path == "/api/v1/pipelines":
                    ids = sorted(api.pipelines)
                    after = self.path.partition("starting_after=")[2]
                    ids = [i for i in ids if i > after] if after else ids
                    page = [api.pipelines[i] for i in ids[:2]]
                    return self.reply(200, {"data": page, "hasMore": len(ids) > 2})
                pid = self.path.split("/")[4]
                job = api.jobs[pid]
                job["looks"] += 1
                if job["state"] == "Created" and job["looks"] >= 2:
                    job["state"] = "Failed" if api.pipelines[pid]["name"] in api.fail \
                        else "Running"
                    job["failureMessage"] = "planning error" if job["state"] == "Failed" \
                        else None
                elif job["state"] == "Stopping":
                    job["state"] = "Stopped"
                return self.reply(200, {"data": [{k: v for k, v in job.items()
                                                  if k != "looks"}], "hasMore": False})

            def do_POST(self):
                api.calls.append(("POST", self.path))
                body = self.body()
                assert set(body) == {"name", "query", "parallelism"}
                assert isinstance(body["parallelism"], int)
                api.created += 1
                pid = f"pl_{api.created:04d}"
                api.pipelines[pid] = {"id": pid, "name": body["name"], "query": body["query"],
                                      "stop": "none"}
                api.jobs[pid] = {"id": f"job_{pid}", "state": "Created", "createdAt": 1,
                                 "looks": 0}
                self.reply(200, api.pipelines[pid])

            def do_PATCH(self):
                api.calls.append(("PATCH", self.path))
                assert self.body() == {"stop": "checkpoint"}
                pid = self.path.split("/")[4]
                api.jobs[pid]["state"] = "Stopping"
                self.reply(200, api.pipelines[pid])

            def do_DELETE(self):
                api.calls.append(("DELETE", self.path))
                pid = self.path.split("/")[4]
                if api.jobs[pid]["state"] not in ("Stopped", "Failed"):
                    return self.reply(400, {"error": "stop the pipeline first"})
                del api.pipelines[pid], api.jobs[pid]
                self.reply(200, {})

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/api/v1"

    def writes(self) -> list[tuple[str, str]]:
        found = [c for c in self.calls if c[0] != "GET"]
        self.calls.clear()
        return found


@pytest.fixture
def arroyo_api():
    api = ArroyoApi()
    yield api
    api.server.shutdown()


def test_registration_creates_replaces_and_removes(arroyo_api, tmp_path, capsys):
    import importlib.util

    from .support import write_tree

    files = example_files("pipelines")
    folder = write_tree(files, tmp_path) / "arroyo-queries"
    spec = importlib.util.spec_from_file_location("register", folder / "register.py")
    register = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(register)
    register.POLL_SECONDS = 0.01
    run = [f"--api={arroyo_api.url}", "--timeout=20"]
    names = sorted(p.stem for p in folder.glob("*.sql"))
    assert len(names) == 24

    assert register.main(run) == 0
    assert [c[0] for c in arroyo_api.writes()] == ["POST"] * 24
    assert sorted(p["name"] for p in arroyo_api.pipelines.values()) == names
    assert register.main([*run, "--check"]) == 0

    assert register.main(run) == 0  # nothing changed: nothing is touched
    assert arroyo_api.writes() == []

    changed = folder / "metric_tumbling_count.sql"
    changed.write_text(changed.read_text().replace("'1 minute'", "'2 minutes'"))
    assert register.main([*run, "--check"]) == 1
    old_id = next(p["id"] for p in arroyo_api.pipelines.values()
                  if p["name"] == "metric_tumbling_count")
    arroyo_api.calls.clear()
    assert register.main(run) == 0
    assert arroyo_api.writes() == [("PATCH", f"/api/v1/pipelines/{old_id}"),
                                   ("DELETE", f"/api/v1/pipelines/{old_id}"),
                                   ("POST", "/api/v1/pipelines")]

    # A rule removed: its generated pipeline goes; a pipeline someone made by hand stays.
    arroyo_api.pipelines["zz_manual"] = {"id": "zz_manual", "name": "manual",
                                         "query": "SELECT 1", "stop": "none"}
    arroyo_api.jobs["zz_manual"] = {"id": "job", "state": "Running", "createdAt": 1,
                                    "looks": 0}
    (folder / "metric_session_custom.sql").unlink()
    assert register.main(run) == 0
    assert [c[0] for c in arroyo_api.writes()] == ["PATCH", "DELETE"]
    assert "manual" in {p["name"] for p in arroyo_api.pipelines.values()}
    assert "metric_session_custom" not in {p["name"] for p in arroyo_api.pipelines.values()}

    # A pipeline Arroyo cannot run is an error that says why.
    arroyo_api.fail.add("metric_sliding_sum")
    broken = folder / "metric_sliding_sum.sql"
    broken.write_text(broken.read_text() + "\n")
    with pytest.raises(SystemExit, match="failed: planning error"):
        register.main(run)
    capsys.readouterr()
