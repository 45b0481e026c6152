"""What an aggregation rule produces: its output columns and their PostgreSQL types.

Shared by the PostgreSQL target (the output table) and the Arroyo target (the SELECT that
fills it), so both agree on names and types.
"""

from __future__ import annotations

from dataclasses import dataclass

from .model import Backend, Rule

PIPELINE_ROLE = "crud_pipeline"  # the role Arroyo's webhook sink writes output tables as
# Columns every output table has besides the group-by fields; a group-by field cannot use them.
OUTPUT_NAMES = ("window_start", "window_end", "value", "updated_at")
# The generated column of a pipeline's source table that carries its watermark.
WATERMARK = "commit_watermark"


@dataclass(frozen=True)
class OutputColumn:
    name: str
    sql_type: str


def value_type(backend: Backend, rule: Rule) -> str:
    """The PostgreSQL type of a rule's aggregated `value`."""
    if rule.function in ("COUNT", "COUNT_DISTINCT"):
        return "bigint"
    if rule.function == "STRING_AGG":
        return "text"
    if rule.function == "CUSTOM":
        return "jsonb"  # any JSON value the expression yields (object, number, ...)
    column = backend.entity(rule.entity).column(rule.target_field)
    if rule.function in ("MIN", "MAX"):
        return column.sql_type
    if column.kind in ("REAL", "DOUBLE"):
        return "double precision"
    return "numeric"  # SUM and AVG of integers and decimals, exactly


def output_columns(backend: Backend, rule: Rule) -> list[OutputColumn]:
    """window_start, window_end, the group-by fields, then value."""
    entity = backend.entity(rule.entity)
    columns = [OutputColumn("window_start", "timestamp with time zone"),
               OutputColumn("window_end", "timestamp with time zone")]
    columns += [OutputColumn(name, entity.column(name).sql_type) for name in rule.group_by]
    columns.append(OutputColumn("value", value_type(backend, rule)))
    return columns


def key_columns(rule: Rule) -> list[str]:
    """A window and its group identify a result, so a replayed window replaces it."""
    return ["window_start", "window_end", *rule.group_by]
