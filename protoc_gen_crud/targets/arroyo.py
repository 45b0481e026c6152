"""Arroyo target: one streaming SQL pipeline per aggregation rule, and their registration.

`arroyo-queries/<entity>_<rule>.sql` reads the entity's change stream from the gateway's SSE
endpoint (Arroyo keeps the last event id in its checkpoints and resumes with Last-Event-ID),
aggregates it in event-time windows over the commit time, and writes each closed window to
every output of the rule through Arroyo's webhook sink:

- `table_name`: PostgREST's table endpoint as the pipeline role, `Prefer:
  resolution=merge-duplicates`, so a window sent twice (Arroyo retries failed requests and
  replays after a restart from a checkpoint) upserts the same row;
- `webhook_url`: as given (a URL on the PostgREST service gets the same token and upsert);
- `sse_channel`: the gateway's internal publish endpoint, which appends to a Redis stream at
  most once per distinct result and serves it at `/stream/<channel>`.

Arroyo's SQL is DataFusion's: user expressions were checked by the builder and are renamed
here (`json_build_object` -> `named_struct`). Secrets are `{{ VAR }}` references that Arroyo
fills from its environment. `arroyo-queries/register.py` creates or replaces the pipelines
through Arroyo's REST API.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlparse

from .. import aggregates, sqlexpr
from ..model import Backend, Column, Entity, Rule
from ..rendering import ident, literal
from ..rendering import render as render_template
from ..resources import static_text
from .openresty import INTERNAL_PORT, LISTEN_PORT, TICK
from .openresty import UPSTREAM_HOST as POSTGREST_HOST
from .postgrest import SERVER_PORT

GATEWAY_HOST = "proxy"
TOKEN_VARIABLE = "CRUD_PIPELINE_TOKEN"
WATERMARK_DELAY = "5 seconds"  # how late (in commit time) a change may arrive
PARALLELISM = 1  # an SSE source is read by one task anyway

# Arroyo column types for the JSON the relay writes, by model kind. A connection table takes
# only the Arrow types arroyo-rpc's `SourceField` converts (api_types/connections.rs:164-209 at
# v0.12.1: booleans, 32/64-bit integers and floats, timestamps, text, structs and lists):
# INTERVAL arrives as text (a Duration's "3.500s"); BYTEA too (its JSON form is base64 text,
# and arrow-json has no decoder for Binary). DATE and TIME arrive as the google.type.Date and
# TimeOfDay messages' JSON objects: JSON columns, which hold any JSON value as its text, as
# for JSONB.
_SCALARS = {
    "TEXT": "TEXT", "UUID": "TEXT", "INTEGER": "INT", "SMALLINT": "INT", "SERIAL": "INT",
    "BIGINT": "BIGINT", "BIGSERIAL": "BIGINT", "DECIMAL": "DOUBLE", "REAL": "FLOAT",
    "DOUBLE": "DOUBLE", "BOOLEAN": "BOOLEAN", "TIMESTAMPTZ": "TIMESTAMP",
    "TIMESTAMP": "TIMESTAMP", "DATE": "JSON", "TIME": "JSON", "INTERVAL": "TEXT",
    "JSON": "JSON", "JSONB": "JSON", "BYTEA": "TEXT",
}


@dataclass(frozen=True)
class SqlColumn:
    name: str
    type: str
    not_null: bool = False


@dataclass(frozen=True)
class Sink:
    """One output of a rule: a webhook sink table in the pipeline."""

    table: str  # the sink's name inside the pipeline
    kind: str  # table | webhook | channel
    endpoint: str
    headers: str
    describe: str


@dataclass(frozen=True)
class Pipeline:
    name: str
    rule: Rule
    source_table: str
    source_columns: tuple[SqlColumn, ...]
    source_endpoint: str
    source_headers: str
    window_call: str
    value_expression: str
    where: str
    having: str
    output_columns: tuple[SqlColumn, ...]  # empty: Arroyo infers them (CUSTOM values)
    sinks: tuple[Sink, ...]
    secrets: tuple[str, ...]


def arroyo_type(column: Column) -> str:
    base = _SCALARS[column.kind]
    return base + "[]" if column.sql_type.endswith("[]") else base


def value_type(backend: Backend, rule: Rule) -> str:
    """The Arroyo type of `value`, as DataFusion computes it from the source column."""
    if rule.function in ("COUNT", "COUNT_DISTINCT"):
        return "BIGINT"
    if rule.function == "STRING_AGG":
        return "TEXT"
    column_type = arroyo_type(backend.entity(rule.entity).column(rule.target_field))
    if rule.function == "AVG" or (rule.function == "SUM" and column_type == "FLOAT"):
        return "DOUBLE"
    if rule.function == "SUM" and column_type == "INT":
        return "BIGINT"
    return column_type


def window_call(rule: Rule) -> str:
    w = rule.window
    if w.type == "TUMBLING":
        return f"tumble(INTERVAL {literal(w.interval)})"
    if w.type == "SLIDING":
        return f"hop(INTERVAL {literal(w.slide)}, INTERVAL {literal(w.interval)})"
    return f"session(INTERVAL {literal(w.interval)})"


def value_expression(rule: Rule) -> str:
    target = rule.target_field and ident(rule.target_field)
    match rule.function:
        case "COUNT":
            return f"count({target})" if target else "count(*)"
        case "COUNT_DISTINCT":
            return f"count(DISTINCT {target})"
        case "STRING_AGG":
            return f"string_agg({target}, {literal(rule.separator)})"
        case "CUSTOM":
            return sqlexpr.translate(rule.custom_sql)
        case other:
            return f"{other.lower()}({target})"


def source_columns(entity: Entity) -> tuple[SqlColumn, ...]:
    columns = [SqlColumn(c.name, arroyo_type(c)) for c in entity.columns]
    columns += [SqlColumn("table_name", "TEXT", True), SqlColumn("action", "TEXT", True),
                SqlColumn("commit_time", "TIMESTAMP", True), SqlColumn("commit_lsn", "TEXT")]
    return tuple(columns)


def _uses_postgrest(url: str) -> bool:
    parsed = urlparse(url)
    return parsed.hostname == POSTGREST_HOST and (parsed.port or 80) == SERVER_PORT


def token_header(backend: Backend) -> str:
    """The pipeline's Authorization header (a `{{ VAR }}` Arroyo fills), or "" without auth."""
    if backend.auth.type == "NONE":
        return ""
    return f"Authorization: Bearer {{{{ {TOKEN_VARIABLE} }}}}"


def sinks(backend: Backend, rule: Rule) -> tuple[Sink, ...]:
    upsert = "Prefer: resolution=merge-duplicates"
    api = ",".join(h for h in (token_header(backend), upsert) if h)
    json_body = "Content-Type: application/json"
    found: list[Sink] = []
    table_url = ""
    if rule.output_table:
        table_url = f"http://{POSTGREST_HOST}:{SERVER_PORT}/{rule.output_table}"
        found.append(Sink(f"{rule.name}_table", "table", table_url, f"{json_body},{api}",
                          f"table {rule.output_table} (upsert through PostgREST)"))
    if rule.webhook_url and rule.webhook_url.rstrip("/") != table_url:
        headers = f"{json_body},{api}" if _uses_postgrest(rule.webhook_url) else json_body
        found.append(Sink(f"{rule.name}_webhook", "webhook", rule.webhook_url, headers,
                          f"webhook {rule.webhook_url}"))
    if rule.sse_channel:
        channel = rule.sse_channel.removeprefix("/stream/")
        found.append(Sink(f"{rule.name}_channel", "channel",
                          f"http://{GATEWAY_HOST}:{INTERNAL_PORT}/publish/{channel}",
                          json_body, f"SSE channel {rule.sse_channel}"))
    return tuple(found)


def pipeline(backend: Backend, rule: Rule) -> Pipeline:
    entity = backend.entity(rule.entity)
    outputs: tuple[SqlColumn, ...] = ()
    if rule.function != "CUSTOM":
        outputs = (SqlColumn("window_start", "TIMESTAMP", True),
                   SqlColumn("window_end", "TIMESTAMP", True),
                   *(SqlColumn(g, arroyo_type(entity.column(g))) for g in rule.group_by),
                   SqlColumn("value", value_type(backend, rule)))
    found = sinks(backend, rule)
    token = token_header(backend)
    gateway = f"http://{GATEWAY_HOST}" + (f":{LISTEN_PORT}" if LISTEN_PORT != 80 else "")
    return Pipeline(
        name=f"{rule.entity}_{rule.name}",
        rule=rule,
        source_table=f"{rule.entity}_changes",
        source_columns=source_columns(entity),
        source_endpoint=f"{gateway}/stream/sse/{rule.entity}?ticks=1",
        source_headers=token,
        window_call=window_call(rule),
        value_expression=value_expression(rule),
        where=sqlexpr.translate(rule.where) if rule.where.strip() else "",
        having=sqlexpr.translate(rule.having) if rule.having.strip() else "",
        output_columns=outputs,
        sinks=found,
        secrets=(TOKEN_VARIABLE,) if token else (),
    )


def pipelines(backend: Backend) -> list[Pipeline]:
    return [pipeline(backend, rule) for rule in backend.rules]


def render(backend: Backend) -> dict[str, str]:
    found = pipelines(backend)
    if not found:
        return {}
    files = {
        f"arroyo-queries/{p.name}.sql": render_template(
            "arroyo/pipeline.sql.j2", p=p, watermark=aggregates.WATERMARK,
            watermark_delay=WATERMARK_DELAY, tick=TICK)
        for p in found
    }
    files["arroyo-queries/register.py"] = static_text("arroyo_register.py")
    files["arroyo-queries/test-pipeline.sh"] = static_text("arroyo_test_pipeline.sh")
    return files
