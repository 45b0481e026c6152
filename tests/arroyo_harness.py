"""Run generated Arroyo pipelines where Arroyo cannot be installed: parse them with sqlparser-rs
(sqloxide) and plan or execute them in Apache DataFusion, the engine Arroyo is built on.

Tables come from the pipeline's own DDL. Arroyo's window functions are registered as stubs
returning a {start, end} struct (enough to plan), or, to execute, replaced by the bucket
arithmetic they stand for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta

import pyarrow as pa
import sqloxide
from datafusion import SessionContext, udf

DIALECT = "generic"
EPOCH = "TIMESTAMP '1970-01-01T00:00:00'"
WINDOW = pa.struct([("start", pa.timestamp("ns")), ("end", pa.timestamp("ns"))])
_ARROW = {"Text": pa.string(), "Int": pa.int32(), "BigInt": pa.int64(),
          "Double": pa.float64(), "Float": pa.float32(), "Boolean": pa.bool_(),
          "Timestamp": pa.timestamp("ns"), "Date": pa.date32(), "JSON": pa.string()}


def arrow_type(data_type) -> pa.DataType:
    if isinstance(data_type, str):
        return _ARROW[data_type]
    ((kind, detail),) = data_type.items()
    if kind == "Array":
        return pa.list_(arrow_type(detail["SquareBracket"][0]))
    return _ARROW[kind]


@dataclass
class Table:
    name: str
    schema: pa.Schema
    options: dict[str, str]
    generated: dict[str, str] = field(default_factory=dict)  # column -> expression text


@dataclass
class Parsed:
    tables: dict[str, Table]
    source: Table
    view_name: str
    view_query: str
    inserts: list[tuple[str, str]]  # (sink table, statement)


def _name(parts) -> str:
    if isinstance(parts, dict):  # ObjectName
        parts = parts.get("0", parts)
    return ".".join(p["Identifier"]["value"] if "Identifier" in p else p["value"]
                    for p in parts)


def parse(sql: str) -> Parsed:
    statements = sqloxide.parse_sql(sql, dialect=DIALECT)
    texts = sqloxide.restore_ast(statements)
    tables: dict[str, Table] = {}
    view_name, view_query, inserts = "", "", []
    for statement, text in zip(statements, texts, strict=True):
        ((kind, body),) = statement.items()
        if kind == "CreateTable":
            fields, generated = [], {}
            for column in body["columns"]:
                name = column["name"]["value"]
                not_null = any(o["option"] == "NotNull" for o in column["options"])
                fields.append(pa.field(name, arrow_type(column["data_type"]), not not_null))
                if any(isinstance(o["option"], dict) and "Generated" in o["option"]
                       for o in column["options"]):
                    generated[name] = re.search(
                        rf'"{name}" TIMESTAMP GENERATED ALWAYS AS \((.*?)\) STORED',
                        text).group(1)
            options = {}
            for option in body["table_options"]["With"]:
                value = option["KeyValue"]["value"]["Value"]["value"]["SingleQuotedString"]
                options[option["KeyValue"]["key"]["value"]] = value
            table_name = _name(body["name"])
            tables[table_name] = Table(table_name, pa.schema(fields), options, generated)
        elif kind == "CreateView":
            view_name = _name(body["name"])
            view_query = text.split(" AS ", 1)[1]
        elif kind == "Insert":
            inserts.append((_name(body["table"]["TableName"]), text))
        else:
            raise AssertionError(f"unexpected statement {kind}")
    sources = [t for t in tables.values() if t.options.get("connector") == "sse"]
    assert len(sources) == 1, "a pipeline reads exactly one change stream"
    return Parsed(tables, sources[0], view_name, view_query, inserts)


def _stub(*args):
    return pa.array([None] * len(args[0]), type=WINDOW)


def planning_context() -> SessionContext:
    ctx = SessionContext()
    interval = pa.month_day_nano_interval()
    ctx.register_udf(udf(_stub, [interval], WINDOW, "immutable", name="tumble"))
    ctx.register_udf(udf(_stub, [interval, interval], WINDOW, "immutable", name="hop"))
    ctx.register_udf(udf(_stub, [interval], WINDOW, "immutable", name="session"))
    return ctx


def empty(schema: pa.Schema) -> list[list[pa.RecordBatch]]:
    return [[pa.RecordBatch.from_pylist([], schema=schema)]]


def plan(sql: str) -> pa.Schema:
    """Plan the whole pipeline; returns the schema of its results view. Raises on unknown
    columns, type errors, ungrouped columns and sink arity mismatches."""
    parsed = parse(sql)
    ctx = planning_context()
    ctx.register_record_batches(parsed.source.name, empty(parsed.source.schema))
    ctx.sql(f'CREATE VIEW "{parsed.view_name}" AS {parsed.view_query}')
    view = ctx.sql(f'SELECT * FROM "{parsed.view_name}"').schema()
    for table in parsed.tables.values():
        if table is not parsed.source:  # a sink without columns takes the query's (Arroyo)
            ctx.register_record_batches(table.name, empty(table.schema if len(table.schema)
                                                          else view))
    for sink, statement in parsed.inserts:
        ctx.sql(statement).logical_plan()
        declared = parsed.tables[sink].schema
        if len(declared):  # declared sink columns must be exactly what the view produces
            assert declared.names == view.names, (sink, declared.names, view.names)
            for want, got in zip(declared, view, strict=True):
                assert same_type(want.type, got.type), (sink, want, got)
    return view


def same_type(declared: pa.DataType, produced: pa.DataType) -> bool:
    def norm(t: pa.DataType) -> pa.DataType:
        if pa.types.is_large_string(t) or pa.types.is_string_view(t):
            return pa.string()
        return t
    return norm(declared) == norm(produced)


# --------------------------------------------------------------------- execution
def _interval_literal(text: str) -> str:
    return f"INTERVAL '{text}'"


_TUMBLE = re.compile(r"tumble\(INTERVAL '([^']+)'\)")
_HOP = re.compile(r"hop\(INTERVAL '([^']+)', INTERVAL '([^']+)'\)")
_SESSION = re.compile(r"session\(INTERVAL '([^']+)'\)")


def rewrite_windows(query: str) -> tuple[str, str, tuple[str, ...]]:
    """Replace the window call by its arithmetic; returns (query, kind, its intervals)."""
    if tumble := _TUMBLE.search(query):
        width = _interval_literal(tumble.group(1))
        start = f"date_bin({width}, commit_time, {EPOCH})"
        return (query.replace(tumble.group(0),
                              f"named_struct('start', {start}, 'end', {start} + {width})"),
                "tumble", tumble.groups())
    if hop := _HOP.search(query):
        slide, width = _interval_literal(hop.group(1)), _interval_literal(hop.group(2))
        start = f"(date_bin({slide}, commit_time, {EPOCH}) - crud_hop_shift)"
        return (query.replace(hop.group(0),
                              f"named_struct('start', {start}, 'end', {start} + {width})"),
                "hop", hop.groups())
    session = _SESSION.search(query)
    assert session, query
    return (query.replace(session.group(0), "named_struct('start', crud_session_start, "
                                            "'end', crud_session_end)"),
            "session", session.groups())


def execute(sql: str, events: list[dict], group_by: tuple[str, ...] = ()) -> list[dict]:
    """Run the pipeline's results view over `events` (rows of its source table)."""
    parsed = parse(sql)
    source = parsed.source
    query, kind, intervals = rewrite_windows(parsed.view_query)
    rows = [dict(e) for e in events]
    for row in rows:
        row["commit_watermark"] = row["commit_time"] - timedelta(seconds=5)
    ctx = SessionContext()
    if kind == "hop":
        slide, width = (seconds(text) for text in intervals)
        # Each event belongs to width/slide windows: one copy per window, shifted back.
        expanded = []
        for row in rows:
            for k in range(width // slide):
                expanded.append({**row, "crud_hop_shift": timedelta(seconds=k * slide)})
        schema = source.schema.append(pa.field("crud_hop_shift", pa.duration("ns")))
        ctx.register_record_batches(source.name, [[pa.RecordBatch.from_pylist(
            expanded, schema=schema)]])
    elif kind == "session":
        (gap,) = intervals
        ctx.register_record_batches("crud_raw", [[pa.RecordBatch.from_pylist(
            rows, schema=source.schema)]])
        where = re.search(r"FROM \S+ WHERE (.*?) GROUP BY", query).group(1)
        part = ", ".join(f'"{g}"' for g in group_by) or "1"
        ctx.sql(f"""CREATE VIEW "{source.name}" AS
            WITH f AS (SELECT * FROM crud_raw WHERE {where}),
            g AS (SELECT *, CASE WHEN commit_time - lag(commit_time) OVER (PARTITION BY {part}
                    ORDER BY commit_time) <= INTERVAL '{gap}' THEN 0 ELSE 1 END AS crud_new
                  FROM f),
            h AS (SELECT *, sum(crud_new) OVER (PARTITION BY {part} ORDER BY commit_time
                    ROWS UNBOUNDED PRECEDING) AS crud_session FROM g)
            SELECT *, min(commit_time) OVER (PARTITION BY {part}, crud_session)
                      AS crud_session_start,
                      max(commit_time) OVER (PARTITION BY {part}, crud_session)
                      + INTERVAL '{gap}' AS crud_session_end
            FROM h""")
    else:
        ctx.register_record_batches(source.name, [[pa.RecordBatch.from_pylist(
            rows, schema=source.schema)]])
    return ctx.sql(query).to_pylist()


def seconds(text: str) -> int:
    count, unit = text.split()
    return int(count) * {"second": 1, "minute": 60, "hour": 3600, "day": 86400}[
        unit.rstrip("s")]
