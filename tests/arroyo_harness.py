"""Plan generated Arroyo pipelines the way Arroyo v0.12.1 plans them, where Arroyo cannot be
installed: its parser dialect, its table catalog, its connector option rules and its window
checks, reproduced from its source at that tag (cited per rule below), then planning or
execution in Apache DataFusion, the engine Arroyo is built on.

Arroyo's window functions are registered as stubs returning a {start, end} struct (enough to
plan), or, to execute, replaced by the bucket arithmetic they stand for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import urlparse

import pyarrow as pa
import sqloxide
from datafusion import SessionContext, udf

# arroyo-planner/src/lib.rs:640-642 (v0.12.1): `parse_sql` uses sqlparser's PostgreSqlDialect.
ARROYO_VERSION = "0.12.1"  # the tag every rule below was read at
DIALECT = "postgres"
EPOCH = "TIMESTAMP '1970-01-01T00:00:00'"
WINDOW = pa.struct([("start", pa.timestamp("ns")), ("end", pa.timestamp("ns"))])
_ARROW = {"Text": pa.string(), "Int": pa.int32(), "BigInt": pa.int64(),
          "Double": pa.float64(), "Float": pa.float32(), "Boolean": pa.bool_(),
          "Timestamp": pa.timestamp("ns"), "Date": pa.date32(), "JSON": pa.string(),
          "Bytea": pa.binary(), "Interval": pa.month_day_nano_interval()}

# Options every connector table takes (arroyo-planner/src/tables.rs:203-310, v0.12.1):
# `connector` and `connection_profile` (tables.rs:625, 650), Format::from_opts (`format` and,
# for json, the `json.*` keys: arroyo-rpc/src/formats.rs:58-95, 267-282), Framing::from_opts
# (formats.rs:333-360), BadData::from_opts (formats.rs:311), then `event_time_field`,
# `watermark_field` and `idle_micros` (tables.rs:292-300). Anything left after the
# connector's own `from_options` is "unknown options provided in WITH clause" (tables.rs:304).
COMMON_OPTIONS = frozenset({
    "connector", "connection_profile", "format", "json.confluent_schema_registry",
    "json.include_schema", "json.unstructured", "json.timestamp_format", "framing",
    "framing.newline.max_length", "bad_data", "event_time_field", "watermark_field",
    "idle_micros"})
# The connectors' own keys: sse/mod.rs:130-132 (endpoint required by pull_opt),
# webhook/mod.rs:185-187.
CONNECTOR_OPTIONS = {"sse": frozenset({"endpoint", "headers", "events"}),
                     "webhook": frozenset({"endpoint", "headers"})}
REQUIRED_OPTIONS = {"sse": ("endpoint",), "webhook": ("endpoint",)}
FORMATS = frozenset({"json", "debezium_json", "protobuf", "avro", "raw_string", "raw_bytes",
                     "parquet"})  # formats.rs:272-280
_VAR = re.compile(r"\{\{\s*(\w+)\s*}}")  # arroyo-rpc/src/var_str.rs:58
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP token (RFC 9110)


# The Arrow types a connection table's fields may have: `TryFrom<Field> for SourceField`
# (arroyo-rpc/src/api_types/connections.rs:164-209, v0.12.1); anything else is "field '..' has
# a type '..' that cannot be used in a connection table" (arroyo-planner/src/tables.rs:255-268).
# Binary passes there but arrow-json 52.1's make_decoder refuses it for JSON
# (arrow-json/src/reader/mod.rs:820-822), and Arroyo unwraps that error
# (arroyo-formats/src/de.rs:148).
def connection_type_problem(data_type: pa.DataType, json_format: bool) -> str | None:
    if pa.types.is_list(data_type):
        return connection_type_problem(data_type.value_type, json_format)
    if pa.types.is_struct(data_type):
        for child in data_type:
            problem = connection_type_problem(child.type, json_format)
            if problem:
                return problem
        return None
    if pa.types.is_binary(data_type) and json_format:
        return "Binary is not supported by JSON"
    accepted = (pa.types.is_boolean(data_type) or pa.types.is_string(data_type)
                or pa.types.is_binary(data_type)
                or data_type in (pa.int32(), pa.int64(), pa.uint32(), pa.uint64(),
                                 pa.float32(), pa.float64())
                or (pa.types.is_timestamp(data_type) and data_type.unit in ("ms", "us", "ns")))
    return None if accepted else f"Unsupported data type {data_type}"


class PlanError(Exception):
    """What Arroyo would answer when it refuses to plan the pipeline."""


def arrow_type(data_type) -> pa.DataType:
    if isinstance(data_type, str):
        return _ARROW[data_type]
    ((kind, detail),) = data_type.items()
    if kind == "Array":
        return pa.list_(arrow_type(detail["SquareBracket"][0]))
    return _ARROW[kind]


@dataclass
class Table:
    name: str  # the name Arroyo files the table under
    schema: pa.Schema
    options: dict[str, str]
    generated: dict[str, str] = field(default_factory=dict)  # column -> expression text


@dataclass
class Parsed:
    tables: dict[str, Table]  # connector tables, by the name references resolve to
    source_name: str
    view_name: str
    view_query: str
    inserts: list[tuple[str, str]]  # (sink table, statement)
    env: set[str] = field(default_factory=set)  # {{ VAR }}s Arroyo substitutes while planning


def _parts(name) -> list[dict]:
    if isinstance(name, dict):  # ObjectName
        name = name.get("0", name)
    return [p.get("Identifier", p) for p in name]


def printed_name(name) -> str:
    """An ObjectName as sqlparser prints it, quotes included: what Arroyo files a CREATE TABLE
    under (tables.rs:617 `name.to_string()`) and looks an INSERT's sink up by (tables.rs:820)."""
    return ".".join(f'{p["quote_style"]}{p["value"]}{p["quote_style"]}' if p["quote_style"]
                    else p["value"] for p in _parts(name))


def resolved_name(name) -> str:
    """A reference as DataFusion 40 hands it to Arroyo's catalog: unquoted parts lower-cased
    (enable_ident_normalization), quoted ones as written, printed without quotes
    (TableReference's Display); Arroyo's `get_table_source` looks that text up
    (lib.rs:364-370)."""
    return ".".join(p["value"] if p["quote_style"] else p["value"].lower()
                    for p in _parts(name))


def as_reference(text: str) -> str:
    """What a query naming a table as `text` asks Arroyo's catalog for."""
    select = sqloxide.parse_sql(f"SELECT 1 FROM {text}", dialect=DIALECT)[0]
    return resolved_name(_references(select)[0])


class Catalog:
    """Arroyo's schema provider: tables in a map keyed case-insensitively (lib.rs:108,
    219-229, `UniCase`), filed under the name given, found by the text asked for."""

    def __init__(self):
        self.tables: dict[str, Table] = {}

    def file(self, table: Table) -> None:
        self.tables[table.name.casefold()] = table

    def get(self, text: str) -> Table:
        try:
            return self.tables[text.casefold()]
        except KeyError:
            raise PlanError(f"Table {text} not found") from None


def _references(node) -> list:
    """Every table a query reads (TableFactor::Table), in the order written."""
    found = []
    if isinstance(node, dict):
        relation = node.get("relation")
        if isinstance(relation, dict) and "Table" in relation:
            found.append(relation["Table"]["name"])
        for value in node.values():
            found += _references(value)
    elif isinstance(node, list):
        for value in node:
            found += _references(value)
    return found


def _option_value(option) -> str:
    """tables.rs:463-470: single- or dollar-quoted strings, numbers and booleans only."""
    value = option["KeyValue"]["value"]["Value"]["value"]
    if isinstance(value, dict) and ("SingleQuotedString" in value
                                    or "DollarQuotedString" in value):
        return next(iter(value.values()))
    if isinstance(value, dict) and "Number" in value:
        return value["Number"][0]
    if isinstance(value, dict) and "Boolean" in value:
        return str(value["Boolean"]).lower()
    raise PlanError(f"unsupported option value {value!r}")


def _headers(text: str) -> dict[str, str]:
    """arroyo-types/src/lib.rs:143-154 `string_to_map(headers, ':')`: pairs split on ',', each
    on ':', of which only the first two parts are kept; a pair without ':' panics
    ("Invalid header map", connectors/src/lib.rs:149). A value the split would cut is an
    error here, since Arroyo would send it truncated."""
    found = {}
    for pair in text.split(",") if text.strip() else []:
        parts = pair.strip().split(":")
        if len(parts) < 2:
            raise PlanError(f"Invalid header map: {pair!r} has no ':'")
        if len(parts) > 2:
            raise PlanError(f"header {pair!r}: Arroyo keeps only {parts[1].strip()!r}")
        name, value = parts[0].strip(), parts[1].strip()
        if not _HEADER_NAME.match(name):
            raise PlanError(f"invalid header name {name}")
        found[name] = value
    return found


def check_options(table: Table, env: set[str]) -> None:
    """The connector's option rules, in the order Arroyo applies them."""
    options = dict(table.options)
    connector = options.get("connector")
    if connector not in CONNECTOR_OPTIONS:
        raise PlanError(f"Unknown connector '{connector}'")
    if options.get("format", "json") not in FORMATS:
        raise PlanError(f"invalid format: 'Unknown format '{options['format']}''")
    for key in REQUIRED_OPTIONS[connector]:
        if key not in options:
            raise PlanError(f"Failed to create table {table.name}: required option '{key}' "
                            "not set")
    unknown = set(options) - COMMON_OPTIONS - CONNECTOR_OPTIONS[connector]
    if unknown:
        raise PlanError("unknown options provided in WITH clause: "
                        + ", ".join(f"'{k}'" for k in sorted(unknown)))
    for key in ("endpoint", "headers"):
        env.update(_VAR.findall(options.get(key, "")))
    if urlparse(_VAR.sub("x", options["endpoint"])).scheme not in ("http", "https"):
        raise PlanError(f"invalid endpoint '{options['endpoint']}'")
    _headers(_VAR.sub("x", options.get("headers", "")))
    for column in table.schema:
        if column.name in table.generated:
            continue  # virtual: not a SourceField
        problem = connection_type_problem(column.type, options.get("format", "json") == "json")
        if problem:
            raise PlanError(f"field '{column.name}' has a type '{column.type}' that cannot be "
                            f"used in a connection table: {problem}")
    names = set(table.schema.names) | set(table.generated)
    for key in ("event_time_field", "watermark_field"):
        if key in options and options[key] not in names:
            raise PlanError(f"{key} '{options[key]}' is not a column of {table.name}")


def parse(sql: str) -> Parsed:
    """Read a pipeline as Arroyo's planner does, statement by statement
    (lib.rs:663-676): tables are filed, views planned, inserts resolved, each against what
    came before. Raises PlanError where Arroyo would refuse the pipeline."""
    statements = sqloxide.parse_sql(sql, dialect=DIALECT)
    texts = sqloxide.restore_ast(statements)
    catalog = Catalog()
    view_name, view_query, inserts, env = "", "", [], set()
    for statement, text in zip(statements, texts, strict=True):
        ((kind, body),) = statement.items()
        if kind == "CreateTable":
            fields, generated = [], {}
            for column in body["columns"]:
                name = column["name"]["value"]  # tables.rs:532: a column is its value
                not_null = any(o["option"] == "NotNull" for o in column["options"])
                fields.append(pa.field(name, arrow_type(column["data_type"]), not not_null))
                if any(isinstance(o["option"], dict) and "Generated" in o["option"]
                       for o in column["options"]):
                    generated[name] = re.search(
                        rf'"{name}" TIMESTAMP GENERATED ALWAYS AS \((.*?)\) STORED',
                        text).group(1)
            options = {o["KeyValue"]["key"]["value"]: _option_value(o)
                       for o in body["table_options"]["With"]}
            table = Table(printed_name(body["name"]), pa.schema(fields), options, generated)
            if generated:
                # tables.rs:488-509: a generated column is planned as
                # `SELECT <expr> from <name as filed>` against a table filed under that name.
                own = Catalog()
                own.file(table)
                own.get(as_reference(table.name))
            check_options(table, env)
            catalog.file(table)
        elif kind == "CreateView":
            for reference in _references(body["query"]):
                catalog.get(resolved_name(reference))
            check_windows(body["query"])
            # Views are planned by DataFusion, whose name is the normalized one (tables.rs:686).
            view_name = resolved_name(body["name"])
            view_query = text.split(" AS ", 1)[1]
            view = Table(view_name, pa.schema([]), {})
            catalog.file(view)
        elif kind == "Insert":
            target = body["table"]["TableName"]
            catalog.get(printed_name(target))  # infer_sink_schema (tables.rs:817-822, 795)
            for reference in [target, *_references(body["source"])]:
                catalog.get(resolved_name(reference))  # DataFusion's planning of the INSERT
            inserts.append((resolved_name(target), text))
        else:
            raise PlanError(f"unexpected statement {kind}")
    # Every reference resolved: DataFusion may see each table under its resolved name.
    tables = {as_reference(t.name): t for t in catalog.tables.values() if t.options}
    sources = [name for name, t in tables.items() if t.options.get("connector") == "sse"]
    if len(sources) != 1:
        raise PlanError("a pipeline reads exactly one change stream")
    return Parsed(tables, sources[0], view_name, view_query, inserts, env)


def _function_calls(node, name: str) -> list[dict]:
    found = []
    if isinstance(node, dict):
        function = node.get("Function")
        if isinstance(function, dict) and printed_name(function["name"]).lower() == name:
            found.append(function)
        for value in node.values():
            found += _function_calls(value, name)
    elif isinstance(node, list):
        for value in node:
            found += _function_calls(value, name)
    return found


def _interval_seconds(argument) -> float:
    """lib.rs:505-526 `get_duration`: an interval literal; months are refused."""
    expression = argument["Unnamed"]["Expr"]
    interval = expression.get("Interval") if isinstance(expression, dict) else None
    if interval is None:
        raise PlanError("unsupported Duration expression, expect duration literal")
    text = interval["value"]["Value"]["value"]["SingleQuotedString"]
    if re.search(r"\b(month|year)s?\b", text):
        raise PlanError("Windows do not support durations specified as months")
    return seconds(text)


def check_windows(query) -> None:
    """lib.rs:528-560 `find_window`: every window's durations are interval literals without
    months; hop(slide, width) needs a width that is a whole multiple of the slide."""
    for call in _function_calls(query, "tumble") + _function_calls(query, "session"):
        for argument in call["args"]["List"]["args"]:
            _interval_seconds(argument)
    for call in _function_calls(query, "hop"):
        slide, width = (_interval_seconds(a) for a in call["args"]["List"]["args"])
        if width % slide:
            raise PlanError(f"hop() width {width}s currently must be a multiple of slide "
                            f"{slide}s")


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
    """Plan the whole pipeline; returns the schema of its results view. Raises on names
    Arroyo cannot resolve, unknown options, bad windows, unknown columns, type errors,
    ungrouped columns and sink arity mismatches. DataFusion sees each table under the name
    Arroyo's catalog resolved it to."""
    parsed = parse(sql)
    ctx = planning_context()
    source = parsed.tables[parsed.source_name]
    ctx.register_record_batches(parsed.source_name, empty(source.schema))
    ctx.sql(f'CREATE VIEW "{parsed.view_name}" AS {parsed.view_query}')
    view = ctx.sql(f'SELECT * FROM "{parsed.view_name}"').schema()
    for name, table in parsed.tables.items():
        if table is not source:  # a sink without columns takes the query's (Arroyo)
            ctx.register_record_batches(name, empty(table.schema if len(table.schema)
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


def decode_json_value(value, data_type: pa.DataType):
    """One JSON value as Arroyo's arrow-json decoder (its 52.1 fork) reads it into a column:
    numeric columns take numbers or strings holding them, the whole string parsed
    (reader/primitive_array.rs:106-113 with arrow-cast's parse.rs:456-495), which is how the
    wire contract's int64 and decimal strings arrive; anything else as it is."""
    if not isinstance(value, str):
        return value
    if pa.types.is_integer(data_type):
        if not re.fullmatch(r"[+-]?\d+", value):
            raise PlanError(f"failed to parse {value!r} as {data_type}")
        return int(value)
    if pa.types.is_floating(data_type):
        return float(value)
    return value


def execute(sql: str, events: list[dict], group_by: tuple[str, ...] = ()) -> list[dict]:
    """Run the pipeline's results view over `events` (the JSON the relay writes, decoded as
    Arroyo's source decodes it into its table's columns)."""
    parsed = parse(sql)
    source, source_name = parsed.tables[parsed.source_name], parsed.source_name
    query, kind, intervals = rewrite_windows(parsed.view_query)
    types = {f.name: f.type for f in source.schema}
    rows = [{k: decode_json_value(v, types[k]) if k in types else v for k, v in e.items()}
            for e in events]
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
        ctx.register_record_batches(source_name, [[pa.RecordBatch.from_pylist(
            expanded, schema=schema)]])
    elif kind == "session":
        (gap,) = intervals
        ctx.register_record_batches("crud_raw", [[pa.RecordBatch.from_pylist(
            rows, schema=source.schema)]])
        where = re.search(r"FROM \S+ WHERE (.*?) GROUP BY", query).group(1)
        part = ", ".join(f'"{g}"' for g in group_by) or "1"
        ctx.sql(f"""CREATE VIEW "{source_name}" AS
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
        ctx.register_record_batches(source_name, [[pa.RecordBatch.from_pylist(
            rows, schema=source.schema)]])
    return ctx.sql(query).to_pylist()


def seconds(text: str) -> int:
    count, unit = text.split()
    return int(count) * {"second": 1, "minute": 60, "hour": 3600, "day": 86400}[
        unit.rstrip("s")]
