"""PostgreSQL types: the SqlType enum mapped to the spelling PostgreSQL itself prints.

Migrations compare a column's current type (`format_type()`) with the wanted one as plain
strings, so the spelling here must be exactly PostgreSQL's.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import date, datetime, time

BASE = {
    "TEXT": "text",
    "INTEGER": "integer",
    "BIGINT": "bigint",
    "SMALLINT": "smallint",
    "DECIMAL": "numeric",
    "REAL": "real",
    "DOUBLE": "double precision",
    "BOOLEAN": "boolean",
    "UUID": "uuid",
    "TIMESTAMPTZ": "timestamp with time zone",
    "TIMESTAMP": "timestamp without time zone",
    "DATE": "date",
    "TIME": "time without time zone",
    "INTERVAL": "interval",
    "JSON": "json",
    "JSONB": "jsonb",
    "BYTEA": "bytea",
    "SERIAL": "integer",
    "BIGSERIAL": "bigint",
}

TEXT_KINDS = frozenset({"TEXT"})
IDENTITY_KINDS = frozenset({"SERIAL", "BIGSERIAL"})
_INT_RANGE = {
    "SMALLINT": 2**15,
    "INTEGER": 2**31,
    "SERIAL": 2**31,
    "BIGINT": 2**63,
    "BIGSERIAL": 2**63,
}
_BOOLEAN_WORDS = {"true", "false", "t", "f", "yes", "no", "on", "off", "1", "0", "y", "n"}


def sql_type(kind: str, array: bool, precision: int | None, scale: int | None) -> str:
    """The full column type, e.g. numeric(10,2) or text[]."""
    base = BASE[kind]
    if kind == "DECIMAL" and precision:
        base = f"numeric({precision},{scale or 0})"
    return base + ("[]" if array else "")


def literal_problem(kind: str, array: bool, text: str) -> str | None:
    """Why `text` is not a valid literal of the type, or None when it is (or cannot be told)."""
    if array:
        return None if text.startswith("{") and text.endswith("}") else (
            "an array literal is written like {a,b,c}"
        )
    try:
        if kind in _INT_RANGE:
            value = int(text)
            if not -_INT_RANGE[kind] <= value < _INT_RANGE[kind]:
                return f"{text} is out of range for {BASE[kind]}"
        elif kind in {"DECIMAL", "REAL", "DOUBLE"}:
            float(text)
        elif kind == "BOOLEAN":
            if text.strip().lower() not in _BOOLEAN_WORDS:
                return f"{text!r} is not a boolean (use true or false)"
        elif kind == "UUID":
            uuid.UUID(text)
        elif kind in {"JSON", "JSONB"}:
            json.loads(text)
        elif kind == "DATE":
            date.fromisoformat(text)
        elif kind in {"TIMESTAMP", "TIMESTAMPTZ"}:
            if text.lower() not in {"now", "infinity", "-infinity"}:
                datetime.fromisoformat(text)
        elif kind == "TIME":
            time.fromisoformat(text)
    except ValueError:
        return f"{text!r} is not a valid {BASE[kind]} value"
    return None


_INTERVAL = re.compile(
    r"^\s*(\d+)\s*(second|sec|minute|min|hour|day|week)s?\s*$", re.IGNORECASE
)
_UNIT_SECONDS = {"second": 1, "sec": 1, "minute": 60, "min": 60, "hour": 3600, "day": 86400,
                 "week": 604800}


def interval_seconds(text: str) -> int | None:
    """Seconds in an interval written like "5 minutes", "1 hour" or "1 day"; None if invalid."""
    match = _INTERVAL.match(text)
    if not match or int(match.group(1)) == 0:
        return None
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]


def format_interval(seconds: int) -> str:
    """The canonical spelling of an interval, in the largest whole unit."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}" + ("s" if count != 1 else "")
    return f"{seconds} second" + ("s" if seconds != 1 else "")


# The wire contract: a column's JSON form is the proto3 JSON of the entity message's field.
# PostgreSQL's own JSON already is, except for these kinds, which live in domains of the
# crud_meta schema whose casts to and from json PostgREST applies on every read and write
# ("domain representations"): 64-bit integers and decimals travel as strings (JavaScript
# numbers lose digits above 2^53), bytes as base64, intervals as proto Durations ("3.500s"),
# dates and times of day as the google.type.Date and TimeOfDay messages those columns hold
# ({"year":2026,"month":2,"day":3}; PostgreSQL's "2026-02-03" is no message JSON).
# Identity columns stay plain integers: PostgreSQL allows no domain there.
WIRE_KINDS = {"BIGINT": "int64", "DECIMAL": "decimal", "BYTEA": "bytes",
              "INTERVAL": "duration", "DATE": "date", "TIME": "time_of_day"}
WIRE_BASES = {"int64": "bigint", "decimal": "numeric", "bytes": "bytea",
              "duration": "interval", "date": "date", "time_of_day": "time without time zone"}
# Domain names where the wire kind's own would be a type keyword of PostgreSQL's grammar.
_DOMAIN_NAMES = {"decimal": "decimal_text", "date": "calendar_date"}


def wire_domain(kind: str, array: bool, precision: int | None, scale: int | None,
                default: str | None) -> str:
    """The crud_meta domain of a column whose JSON form differs from PostgreSQL's, else "".

    A column defaulting to its zero value gets the domain variant that has that default
    (`..._zero`): PostgREST's `Prefer: missing=default` fills a domain-typed column with the
    domain's default, not the column's (SchemaCache.hs:818-836 at v12.2.3)."""
    wire = WIRE_KINDS.get(kind)
    if wire is None:
        return ""
    name = _DOMAIN_NAMES.get(wire, wire)
    if wire == "decimal" and precision:
        name += f"_{precision}_{scale or 0}"
    name += "_list" if array else ""
    return name + ("_zero" if default is not None and is_zero(wire, array, default) else "")


def zero_literal(wire: str, array: bool) -> str:
    """The zero value of a wire kind, as a literal of its base type."""
    return "{}" if array else {"bytes": "", "duration": "0"}.get(wire, "0")


def is_zero(wire: str, array: bool, text: str) -> bool:
    """Whether a default literal is the kind's zero value (what proto3 JSON leaves out)."""
    if array:
        return text.strip() == "{}"
    if wire == "bytes":
        return text in ("", "\\x")
    if wire == "duration":
        return text.strip() in ("0", "0s", "00:00:00")
    try:
        return float(text) == 0
    except ValueError:
        return False

