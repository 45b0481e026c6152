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
    assert sqloxide.parse_sql(sql, dialect=harness.DIALECT)
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


ARROYO_RULES = {
    # tables.rs:617 files `"metric_changes"` quotes and all; lib.rs:364 looks up metric_changes.
    "quoted source table": (lambda sql: sql.replace("CREATE TABLE metric_changes (",
                                                    'CREATE TABLE "metric_changes" ('),
                            "Table metric_changes not found"),
    # tables.rs:820: the sink is looked up as sqlparser prints the INSERT's target.
    "quoted sink table": (lambda sql: sql.replace("INSERT INTO tumbling_sum_webhook",
                                                  'INSERT INTO "tumbling_sum_webhook"'),
                          'Table "tumbling_sum_webhook" not found'),
    # tables.rs:304: whatever the connector did not take is refused.
    "unknown option": (lambda sql: sql.replace("    format = 'json',",
                                               "    format = 'json',\n    method = 'POST',", 1),
                       "unknown options provided in WITH clause: 'method'"),
    "unknown format": (lambda sql: sql.replace("format = 'json'", "format = 'jsonl'", 1),
                       "Unknown format 'jsonl'"),
    # lib.rs:536: hop() width must be a whole multiple of its slide.
    "hop width": (lambda sql: sql.replace("tumble(INTERVAL '1 minute')",
                                          "hop(INTERVAL '40 seconds', INTERVAL '1 minute')"),
                  "hop() width 60s currently must be a multiple of slide 40s"),
    # lib.rs:510: months have no fixed length.
    "month window": (lambda sql: sql.replace("tumble(INTERVAL '1 minute')",
                                             "tumble(INTERVAL '1 month')"),
                     "Windows do not support durations specified as months"),
    # api_types/connections.rs:164-209: a connection table's field must be a SourceField.
    "date column": (lambda sql: sql.replace('    "note" TEXT,', '    "note" DATE,', 1),
                    "cannot be used in a connection table"),
    # arrow-json reader/mod.rs:820-822 (Arroyo's 52.1 fork): no JSON decoder for Binary.
    "bytea column": (lambda sql: sql.replace('    "note" TEXT,', '    "note" BYTEA,', 1),
                     "Binary is not supported by JSON"),
    # arroyo-types lib.rs:150: a header is split on ':' and only two parts kept.
    "header cut": (lambda sql: sql.replace("Content-Type: application/json",
                                           "Link: http://x", 1),
                   "Arroyo keeps only 'http'"),
}


@pytest.mark.parametrize("rule", sorted(ARROYO_RULES))
def test_arroyo_rules_bite(rule):
    """Each rule the harness reproduces from Arroyo's planner refuses what Arroyo refuses."""
    sql = pipeline_sql("pipelines", "tumbling_sum")
    assert harness.plan(sql)
    change, message = ARROYO_RULES[rule]
    broken = change(sql)
    assert broken != sql
    with pytest.raises(harness.PlanError) as refused:
        harness.plan(broken)
    assert message in str(refused.value)


def test_dates_and_times_of_day_are_json_columns():
    """google.type.Date and TimeOfDay columns reach the change stream as the messages' JSON
    objects ({"year":2026,"month":2,"day":3}); a connection table takes no DATE or TIME
    field (the "date column" rule above) and a TEXT field no object: they are JSON columns."""
    text = (EXAMPLES_DIR / "pipelines" / "pipelines.textproto").read_text()
    note = '  fields { name: "note" type: SQL_TYPE_TEXT }\n'
    assert note in text
    files = from_text(text.replace(note, note + '  fields { name: "due" type: SQL_TYPE_DATE }\n'
                                   '  fields { name: "opens" type: SQL_TYPE_TIME }\n', 1))
    sql = next(t for rel, t in files.items() if rel.endswith("_tumbling_sum.sql"))
    assert '    "due" JSON,\n' in sql and '    "opens" JSON,\n' in sql
    harness.plan(sql)


def test_table_names_are_bare_and_never_reserved(database):
    """Arroyo resolves only bare names (see ARROYO_RULES); `bare_ident` writes them and refuses
    any name that would read differently bare. Its reserved words are PostgreSQL's own."""
    from protoc_gen_crud.rendering import RESERVED_WORDS, bare_ident

    server = {w for (w,) in database.query(
        "SELECT word FROM pg_get_keywords() WHERE catcode = 'R'")}
    assert server and server <= RESERVED_WORDS
    # The matrix shows why both majors count: 16 made `system_user` reserved.
    major = int(database.query("SHOW server_version_num")[0][0]) // 10000
    assert ("system_user" in server) == (major >= 16)
    for bad in ("window", "select", "Product_changes", 'a"b', "1x", ""):
        with pytest.raises(ValueError):
            bare_ident(bad)
    for name, rel in PIPELINES:
        for statement in sqloxide.parse_sql(example_files(name)[rel], dialect=harness.DIALECT):
            ((kind, body),) = statement.items()
            target = {"CreateTable": "name", "CreateView": "name"}.get(kind)
            parts = body["table"]["TableName"] if kind == "Insert" else body[target]
            assert all(p["Identifier"]["quote_style"] is None for p in parts), (rel, kind)


def test_arroyo_gets_every_variable_its_pipelines_use():
    """Arroyo substitutes `{{ VAR }}` while planning a webhook sink (webhook/mod.rs:194-202,
    var_str.rs:55-75: a missing variable fails the pipeline), so the arroyo service's
    environment must carry each one."""
    import yaml

    for name in EXAMPLES:
        files = example_files(name)
        needed = set().union(*(harness.parse(text).env for rel, text in files.items()
                               if rel.startswith("arroyo-queries/") and rel.endswith(".sql")))
        if not needed:
            continue
        environment = yaml.safe_load(files["compose.yml"])["services"]["arroyo"]["environment"]
        assert needed <= set(environment), (name, needed)


def test_arroyo_keeps_its_pipelines_on_the_volume():
    """Arroyo's pipeline database is SQLite at dirs::config_dir()/arroyo/config.sqlite by
    default (arroyo-rpc config.rs:461-472, v0.12.1), inside the container's own filesystem:
    a recreated container would forget every pipeline. The path must be on a named volume."""
    import yaml

    compose = yaml.safe_load(example_files("product")["compose.yml"])
    arroyo = compose["services"]["arroyo"]
    path = arroyo["environment"]["ARROYO__DATABASE__SQLITE__PATH"]
    mounts = [v.split(":") for v in arroyo["volumes"]]
    assert any(source in compose["volumes"] and path.startswith(target.rstrip("/") + "/")
               for source, target, *_ in mounts), (path, mounts)
    assert arroyo["image"].endswith(f":{harness.ARROYO_VERSION}")  # the rules checked here
    # config.rs:185: ARROYO__A__B_C is the key a.b-c; SqliteConfig denies unknown fields.
    keys = {name.removeprefix("ARROYO__").lower().replace("__", ".").replace("_", "-")
            for name in arroyo["environment"] if name.startswith("ARROYO__")}
    assert keys == {"checkpoint-url", "database.type", "database.sqlite.path"}


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


def on_the_wire(events: list[dict]) -> list[dict]:
    """The events as the relay writes them: the wire contract's int64 and decimal columns
    as JSON strings (the independent computation keeps the numbers)."""
    entity = MATRIX.entity("metric")
    strings = {c.name for c in entity.columns if c.wire in ("int64", "decimal")}
    assert strings, "the matrix has a decimal column on the wire as a string"
    return [{k: (str(v) if k in strings and v is not None else v) for k, v in e.items()}
            for e in events]


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
    rows = harness.execute(sql, on_the_wire(events), rule.group_by)
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
            rows = harness.execute(pipeline_sql("pipelines", rule.name), on_the_wire(events),
                                   rule.group_by)
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
# Arroyo v0.12.1's API types (arroyo-rpc/src/api_types/pipelines.rs:20-28, 106-139, mod.rs:17-33),
# all `#[serde(rename_all = "camelCase")]`: what the stand-in serves and accepts.
PIPELINE_POST = {"required": {"name", "query", "parallelism"},
                 "optional": {"udfs", "checkpointIntervalMicros"}}
JOB_FIELDS = ("id", "runningDesired", "state", "runId", "startTime", "finishTime", "tasks",
              "failureMessage", "createdAt")
# A job's way to Running (arroyo-controller/src/states): Created, Compiling, Scheduling
# (run_id += 1, mod.rs:176-181), Running; a failure while running goes to Recovering
# (restarts += 1, mod.rs:203-208) and round again, Failed after `allowed-restarts` (20,
# default.toml:8; running.rs:126-131).
LIFECYCLE = ("Created", "Compiling", "Scheduling", "Running")
ALLOWED_RESTARTS = 20


class ArroyoApi:
    """A stand-in for Arroyo's REST API (the calls register.py makes, with the field names and
    job states of Arroyo v0.12.1): pipelines page two at a time; each look at a job moves it
    one state on; a stop passes through Stopping; only a stopped pipeline can be deleted.
    Pipelines named in `fail` fail to compile (fatal: Failed with a failureMessage); those in
    `crash` fail once running and go round Recovering, logging an error each time."""

    def __init__(self):
        import http.server
        import threading

        self.pipelines: dict[str, dict] = {}
        self.jobs: dict[str, dict] = {}
        self.errors: dict[str, list[dict]] = {}
        self.restarts: dict[str, int] = {}
        self.calls: list[tuple[str, str]] = []
        self.fail: set[str] = set()
        self.crash: set[str] = set()
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
                parts = self.path.split("/")  # /api/v1/pipelines/<id>/jobs[/<job>/errors]
                pid = parts[4]
                if len(parts) == 8 and parts[7] == "errors":
                    assert parts[6] == api.jobs[pid]["id"]
                    return self.reply(200, {"data": api.errors.get(pid, []), "hasMore": False})
                assert len(parts) == 6 and parts[5] == "jobs", self.path
                api.advance(pid)
                job = api.jobs[pid]
                assert tuple(job) == JOB_FIELDS
                return self.reply(200, {"data": [job]})

            def do_POST(self):
                api.calls.append(("POST", self.path))
                body = self.body()
                assert PIPELINE_POST["required"] <= set(body), body
                assert set(body) <= PIPELINE_POST["required"] | PIPELINE_POST["optional"], \
                    "serde would ignore this field silently"
                assert isinstance(body["parallelism"], int)
                api.created += 1
                pid = f"pl_{api.created:04d}"
                api.pipelines[pid] = {"id": pid, "name": body["name"], "query": body["query"],
                                      "stop": "none"}
                api.jobs[pid] = dict.fromkeys(JOB_FIELDS)
                api.jobs[pid].update(id=f"job_{pid}", runningDesired=True, state="Created",
                                     runId=0, createdAt=1)
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

    def advance(self, pid: str) -> None:
        """One step of the job's state machine per look."""
        job, name = self.jobs[pid], self.pipelines[pid]["name"]
        state = job["state"]
        if state == "Stopping":
            job["state"] = "Stopped"
        elif state == "Compiling" and name in self.fail:
            job.update(state="Failed", failureMessage="planning error")
        elif state == "Running" and name in self.crash:
            self.restarts[pid] = self.restarts.get(pid, 0) + 1
            self.errors.setdefault(pid, []).append({
                "id": f"err{self.restarts[pid]}", "createdAt": self.restarts[pid],
                "operatorId": "webhook_1", "taskIndex": 0, "level": "error",
                "message": "webhook sink failed", "details": "HTTP 401 from crud:3000"})
            if self.restarts[pid] > ALLOWED_RESTARTS:
                job.update(state="Failed", failureMessage="Job has restarted too many times")
            else:
                job["state"] = "Recovering"
        elif state == "Recovering":
            job["state"] = "Compiling"
        elif state in LIFECYCLE[:-1]:
            job["state"] = LIFECYCLE[LIFECYCLE.index(state) + 1]
            if job["state"] == "Scheduling":
                job["runId"] += 1

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
    run = [f"--api={arroyo_api.url}", "--timeout=20", "--settle=0.3"]
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
    arroyo_api.jobs["zz_manual"] = {**dict.fromkeys(JOB_FIELDS), "id": "job",
                                    "state": "Running", "runId": 1, "createdAt": 1}
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

    # One that fails while running is reported on its first restart, with the worker's error,
    # not after Arroyo's twenty restarts or a time-out.
    arroyo_api.crash.add("metric_sliding_max")
    crashing = folder / "metric_sliding_max.sql"
    crashing.write_text(crashing.read_text() + "\n")
    (folder / "metric_sliding_sum.sql").unlink()
    with pytest.raises(SystemExit, match="Recovering after starting: webhook sink failed: HTTP"):
        register.main(run)
    assert max(arroyo_api.restarts.values()) == 1
    capsys.readouterr()
    assert register.main([*run, "--check"]) == 1
    assert "metric_sliding_max: Recovering: webhook sink failed" in capsys.readouterr().out
