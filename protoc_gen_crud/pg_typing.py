"""PostgreSQL's typing, the part an endpoint query's reader needs without a server.

Facts from PostgreSQL's catalogs and its operator and function resolution (the `unknown` rules
of "Type Conversion" in its manual), kept as tables so the reader stays about structure: how
format_type spells a type, which category a type is in (no built-in comparison crosses
categories), what an unknown operand of an operator becomes, what common functions return
and take. tests/test_endpoint_params.py holds every rule against PostgreSQL's own PREPARE.
"""

from __future__ import annotations

import re

from pglast import ast
from pglast.enums import SQLValueFunctionOp

TYPMOD = re.compile(r"\(\s*\d+(\s*,\s*\d+)?\s*\)")


def base_type(sql_type: str) -> str:
    """A parameter's type has no modifier: numeric(10,2) is inferred as numeric."""
    return TYPMOD.sub("", sql_type).strip()


# PostgreSQL's internal type names, as format_type prints them.
TYPE_NAMES = {
    "int4": "integer", "int": "integer", "integer": "integer", "int8": "bigint",
    "bigint": "bigint", "int2": "smallint", "smallint": "smallint", "float8": "double precision",
    "float4": "real", "real": "real", "numeric": "numeric", "decimal": "numeric",
    "bool": "boolean", "boolean": "boolean", "text": "text", "varchar": "character varying",
    "bpchar": "character", "char": "character", "timestamptz": "timestamp with time zone",
    "timestamp": "timestamp without time zone", "time": "time without time zone",
    "timetz": "time with time zone", "date": "date", "interval": "interval", "uuid": "uuid",
    "json": "json", "jsonb": "jsonb", "bytea": "bytea", "name": "name", "inet": "inet",
}
NUMERIC_RANK = ("smallint", "integer", "bigint", "numeric", "real", "double precision")
COMPARISON = frozenset({"=", "<>", "!=", "<", ">", "<=", ">="})
ARITHMETIC = frozenset({"+", "-", "*", "/", "%"})
TEXT_MATCH = frozenset({"~~", "~~*", "!~~", "!~~*", "~", "~*", "!~", "!~*"})
BOOLEAN_RESULT = COMPARISON | TEXT_MATCH | frozenset({"?", "?|", "?&", "@>", "<@", "&&"})
# jsonb's operators whose right operand is not jsonb.
JSONB_RIGHT = {"?": "text", "?|": "text[]", "?&": "text[]", "->": "text", "->>": "text",
                "#>": "text[]", "#>>": "text[]", "-": "text", "#-": "text[]"}
JSONB_RESULT = {"->": "jsonb", "->>": "text", "#>": "jsonb", "#>>": "text", "-": "jsonb",
                 "#-": "jsonb", "||": "jsonb"}
DATETIME = {"timestamp with time zone", "timestamp without time zone", "date"}
# Results of common functions; "$1" means "the type of the first argument".
RESULTS = {
    "count": "bigint", "length": "integer", "char_length": "integer",
    "character_length": "integer", "octet_length": "integer", "bit_length": "integer",
    "strpos": "integer", "position": "integer", "cardinality": "integer",
    "array_length": "integer", "jsonb_array_length": "integer", "json_array_length": "integer",
    "lower": "text", "upper": "text", "btrim": "text", "ltrim": "text", "rtrim": "text",
    "trim": "text", "substr": "text", "substring": "text", "replace": "text", "concat": "text",
    "concat_ws": "text", "left": "text", "right": "text", "lpad": "text", "rpad": "text",
    "initcap": "text", "to_char": "text", "md5": "text", "split_part": "text",
    "string_agg": "text", "format": "text", "now": "timestamp with time zone",
    "clock_timestamp": "timestamp with time zone",
    "statement_timestamp": "timestamp with time zone",
    "transaction_timestamp": "timestamp with time zone", "extract": "numeric",
    "date_part": "double precision", "random": "double precision", "gen_random_uuid": "uuid",
    "row_number": "bigint", "rank": "bigint", "dense_rank": "bigint",
    "jsonb_build_object": "jsonb", "jsonb_agg": "jsonb", "to_jsonb": "jsonb",
    "json_build_object": "json", "json_agg": "json", "to_json": "json",
    "bool_and": "boolean", "bool_or": "boolean", "every": "boolean",
    "min": "$1", "max": "$1", "abs": "$1", "date_trunc": "$2", "round": "$1", "trunc": "$1",
    "ceil": "$1", "floor": "$1", "ceiling": "$1", "sign": "$1",
}
# Argument types of common functions where an argument is a bare `$n` (None: not known).
ARGUMENTS: dict[str, tuple[str | None, ...]] = {
    "left": ("text", "integer"), "right": ("text", "integer"), "repeat": ("text", "integer"),
    "substr": ("text", "integer", "integer"), "substring": ("text", "text", "text"),
    "position": ("text", "text"), "strpos": ("text", "text"),
    "split_part": ("text", "text", "integer"),
    "lpad": ("text", "integer", "text"), "rpad": ("text", "integer", "text"),
    "to_char": (None, "text"), "round": (None, "integer"), "trunc": (None, "integer"),
    "array_length": (None, "integer"), "lower": ("text",), "upper": ("text",),
    "length": ("text",), "md5": ("text",), "replace": ("text", "text", "text"),
    "btrim": ("text", "text"), "ltrim": ("text", "text"), "rtrim": ("text", "text"),
    "jsonb_to_recordset": ("jsonb",), "jsonb_to_record": ("jsonb",),
    "json_to_recordset": ("json",), "json_to_record": ("json",),
    "jsonb_array_elements": ("jsonb",), "jsonb_array_elements_text": ("jsonb",),
    "jsonb_each": ("jsonb",), "jsonb_each_text": ("jsonb",), "jsonb_object_keys": ("jsonb",),
    "to_tsquery": ("text",), "plainto_tsquery": ("text",), "websearch_to_tsquery": ("text",),
}
SUM = {"smallint": "bigint", "integer": "bigint", "bigint": "numeric", "numeric": "numeric",
        "real": "real", "double precision": "double precision", "interval": "interval"}
AVG = {"smallint": "numeric", "integer": "numeric", "bigint": "numeric", "numeric": "numeric",
        "real": "double precision", "double precision": "double precision",
        "interval": "interval"}
VALUE_FUNCTIONS = {
    SQLValueFunctionOp.SVFOP_CURRENT_DATE: "date",
    SQLValueFunctionOp.SVFOP_CURRENT_TIME: "time with time zone",
    SQLValueFunctionOp.SVFOP_CURRENT_TIME_N: "time with time zone",
    SQLValueFunctionOp.SVFOP_CURRENT_TIMESTAMP: "timestamp with time zone",
    SQLValueFunctionOp.SVFOP_CURRENT_TIMESTAMP_N: "timestamp with time zone",
    SQLValueFunctionOp.SVFOP_LOCALTIME: "time without time zone",
    SQLValueFunctionOp.SVFOP_LOCALTIME_N: "time without time zone",
    SQLValueFunctionOp.SVFOP_LOCALTIMESTAMP: "timestamp without time zone",
    SQLValueFunctionOp.SVFOP_LOCALTIMESTAMP_N: "timestamp without time zone",
}
UNKNOWN = "unknown"  # a quoted literal: PostgreSQL types it from its context too
# Type categories (pg_type.typcategory): built-in comparison operators exist only within one.
CATEGORIES = {
    **dict.fromkeys(NUMERIC_RANK, "N"),
    **dict.fromkeys(("text", "character varying", "character", "name"), "S"),
    **dict.fromkeys(DATETIME, "D"), "interval": "T", "boolean": "B", "uuid": "U",
    "jsonb": "jsonb", "bytea": "bytea", "time without time zone": "time",
    "time with time zone": "timetz",
}


def operand(op: str, other: str | None, on_right: bool) -> str | None:
    """The type PostgreSQL gives an unknown operand of `op` whose other operand is `other`."""
    if op in TEXT_MATCH:
        return "text"
    if not other:
        return None
    if other == UNKNOWN:
        return "text" if op in COMPARISON or op == "||" else None
    base = base_type(other)
    if base == "jsonb" and on_right and op in JSONB_RIGHT:
        return JSONB_RIGHT[op]
    if base.endswith("[]") and op == "||":
        return None
    if op == "+" and base in ("timestamp with time zone", "timestamp without time zone"):
        return "interval"
    if op == "+" and base == "date":
        return None  # date + integer, date + interval, date + time: PostgreSQL cannot choose
    if op in ("*", "/") and base == "interval":
        return "double precision"
    return base


def result(op: str, left: str | None, right: str | None) -> str | None:
    """The type of `left op right`, for the common operators."""
    if op in BOOLEAN_RESULT:
        return "boolean"
    lb = base_type(left) if left and left != UNKNOWN else None
    rb = base_type(right) if right and right != UNKNOWN else None
    if lb == "jsonb" and op in JSONB_RESULT:
        return JSONB_RESULT[op]
    if op == "||":
        return lb if lb and lb.endswith("[]") else "text"
    if op in ARITHMETIC:
        if lb in NUMERIC_RANK and rb in NUMERIC_RANK:
            return max(lb, rb, key=NUMERIC_RANK.index)
        if lb in DATETIME and rb == lb and op == "-":
            return "integer" if lb == "date" else "interval"
        if lb in DATETIME and rb in ("interval", "integer"):
            return lb if lb != "date" or rb == "integer" else "timestamp without time zone"
        if lb == rb:
            return lb
    return None


def category(sql_type: str | None) -> str | None:
    if not sql_type or sql_type == UNKNOWN:
        return None
    base = base_type(sql_type)
    if base.endswith("[]"):
        element = category(base[:-2])
        return f"{element}[]" if element else None
    return CATEGORIES.get(base)


def constant(node: ast.A_Const) -> str | None:
    if node.isnull:
        return None
    value = node.val
    if isinstance(value, ast.Integer):
        return "integer"
    if isinstance(value, ast.Float):
        return "numeric" if "." in value.fval or "e" in value.fval.lower() else "bigint"
    if isinstance(value, ast.Boolean):
        return "boolean"
    return UNKNOWN


def type_name(node: ast.TypeName) -> str:
    names = [n.sval for n in node.names]
    if names[0] == "pg_catalog":
        names = names[1:]
    name = ".".join(names) if len(names) > 1 else TYPE_NAMES.get(names[0], names[0])
    if node.arrayBounds:
        name += "[]" * len(node.arrayBounds)
    return name
