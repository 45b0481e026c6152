"""Column values as PostgREST would show them in JSON, from pgoutput's text form."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import orjson

PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_TZ = re.compile(r"([+-]\d\d)(?::?(\d\d))?(?::?(\d\d))?$")


def _bool(text: str) -> bool:
    return text == "t"


def _number(text: str) -> float | int | str:
    if text in ("NaN", "Infinity", "-Infinity"):
        return text
    value = float(text)
    return int(value) if value.is_integer() and "." not in text and "e" not in text else value


def _timestamp(text: str) -> str:
    """2026-11-24 08:45:03.1+00 -> 2026-11-24T08:45:03.1+00:00 (ISO 8601, like to_json)."""
    if text[-3:] == "+00" and text[10:11] == " ":  # UTC, the common case
        return text[:10] + "T" + text[11:] + ":00"
    if text in ("infinity", "-infinity"):
        return text
    iso = text.replace(" ", "T", 1)
    match = _TZ.search(iso)
    if match and "T" in iso and match.start() > iso.index("T"):
        hours, minutes, seconds = match.group(1), match.group(2) or "00", match.group(3)
        iso = iso[:match.start()] + f"{hours}:{minutes}" + (f":{seconds}" if seconds else "")
    return iso


def _json(text: str) -> object:
    return orjson.loads(text)


def parse_array(text: str, element: Callable[[str], object]) -> list[object]:
    """A one-dimensional PostgreSQL array literal, e.g. {a,"b c",NULL}."""
    if text == "{}":
        return []
    body, items, i = text[1:-1], [], 0
    while i < len(body):
        if body[i] == '"':
            i += 1
            chars = []
            while body[i] != '"':
                if body[i] == "\\":
                    i += 1
                chars.append(body[i])
                i += 1
            items.append(element("".join(chars)))
            i += 1
        else:
            end = body.find(",", i)
            end = len(body) if end < 0 else end
            raw = body[i:end]
            items.append(None if raw == "NULL" else element(raw))
            i = end
        i += 1  # the comma
    return items


def _text(text: str) -> str:
    return text


SCALARS: dict[int, Callable[[str], object]] = {
    16: _bool, 20: int, 21: int, 23: int, 26: int, 700: _number,
    701: _number, 1700: _number, 114: _json, 3802: _json, 1114: _timestamp,
    1184: _timestamp,
}
ARRAYS: dict[int, Callable[[str], object]] = {
    1000: _bool, 1005: int, 1007: int, 1016: int, 1021: _number, 1022: _number,
    1231: _number, 199: _json, 3807: _json, 1115: _timestamp, 1185: _timestamp,
    1009: _text, 1015: _text, 2951: _text, 1182: _text, 1183: _text, 1014: _text,
}


def converter(type_oid: int) -> Callable[[str], object]:
    scalar = SCALARS.get(type_oid)
    if scalar is not None:
        return scalar
    element = ARRAYS.get(type_oid)
    if element is not None:
        return lambda text: parse_array(text, element)
    return _text


def commit_time(microseconds: int) -> datetime:
    return PG_EPOCH + timedelta(microseconds=microseconds)
