"""Column values as the API shows them in JSON (the entity message's proto3 JSON, as
PostgREST writes it through the wire domains), from pgoutput's text form."""

from __future__ import annotations

import base64
import functools
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
    """2026-11-24 08:45:03.1+00 -> 2026-11-24T08:45:03.1+00:00 (ISO 8601, like to_json).

    A timestamptz is written in UTC whatever TimeZone the relay's session has, as the API
    writes it (its roles pin TimeZone to UTC): another zone's offset, above all a historical
    local mean time such as +05:21:10, is refused by json_format, protobuf-es and Go."""
    if text[-3:] == "+00" and text[10:11] == " ":  # UTC, the common case
        return text[:10] + "T" + text[11:] + ":00"
    if text in ("infinity", "-infinity"):
        return text
    iso = text.replace(" ", "T", 1)
    match = _TZ.search(iso)
    if match and "T" in iso and match.start() > iso.index("T"):
        return _in_utc(iso[:match.start()], match.group(0))
    return iso


def _in_utc(local: str, offset: str) -> str:
    """A local date-time and its UTC offset (+05, -00:19:32) as the same instant in UTC; the
    fraction is kept as written. Years Python cannot hold (past 9999) keep their offset."""
    digits = offset[1:].replace(":", "").ljust(6, "0")
    hours, minutes, seconds = digits[0:2], digits[2:4], digits[4:6]
    size = timedelta(hours=int(hours), minutes=int(minutes), seconds=int(seconds))
    whole, dot, fraction = local.partition(".")
    try:
        utc = datetime.fromisoformat(whole) - (size if offset[0] == "+" else -size)
    except (ValueError, OverflowError):
        return f"{local}{offset[0]}{hours}:{minutes}" + (f":{seconds}" if int(seconds) else "")
    return utc.isoformat(timespec="seconds") + dot + fraction + "+00:00"


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


def as_text(text: str) -> str:
    """The converter of columns shown as they are (the relay's Encoder skips calling it)."""
    return text


SCALARS: dict[int, Callable[[str], object]] = {
    16: _bool, 20: int, 21: int, 23: int, 26: int, 700: _number,
    701: _number, 1700: _number, 114: _json, 3802: _json, 1114: _timestamp,
    1184: _timestamp,
}
ARRAYS: dict[int, Callable[[str], object]] = {
    1000: _bool, 1005: int, 1007: int, 1016: int, 1021: _number, 1022: _number,
    1231: _number, 199: _json, 3807: _json, 1115: _timestamp, 1185: _timestamp,
    1009: as_text, 1015: as_text, 2951: as_text, 1182: as_text, 1183: as_text, 1014: as_text,
}


def _bytes(text: str) -> str:
    """bytea's hex output (\\x0102) -> standard base64, as crud_meta.wire_bytes_out."""
    return base64.b64encode(bytes.fromhex(text[2:])).decode()


_INTERVAL_UNITS = {"year": 365.25 * 86400, "mon": 30 * 86400, "day": 86400}
_INTERVAL = re.compile(r"(-?\d+) (year|mon|day)s?")
_CLOCK = re.compile(r"(-)?(\d+):(\d\d):(\d\d)(?:\.(\d+))?$")


def _duration(text: str) -> str:
    """An interval in PostgreSQL's default output style ("1 day -02:00:03.5") -> a proto
    Duration's JSON ("79196.500s"), as crud_meta.wire_duration_out: months count 30 days and
    years 365.25 (extract(epoch) does the same), microsecond precision."""
    micros = 0
    for count, unit in _INTERVAL.findall(text):
        micros += round(int(count) * _INTERVAL_UNITS[unit] * 1_000_000)
    clock = _CLOCK.search(text)
    if clock:
        sign, hours, minutes, seconds, fraction = clock.groups()
        part = ((int(hours) * 60 + int(minutes)) * 60 + int(seconds)) * 1_000_000
        part += int((fraction or "").ljust(6, "0")[:6])
        micros += -part if sign else part
    whole, fraction = divmod(abs(micros), 1_000_000)
    sign = "-" if micros < 0 else ""
    if fraction == 0:
        return f"{sign}{whole}s"
    if fraction % 1000 == 0:
        return f"{sign}{whole}.{fraction // 1000:03d}s"
    return f"{sign}{whole}.{fraction:06d}s"


def _date(text: str) -> dict[str, int]:
    """A date in ISO output style (2026-02-03) -> the google.type.Date message's JSON, as
    crud_meta.wire_date_out: the column's domain holds only years 1 to 9999."""
    year, month, day = text.split("-")
    return {"year": int(year), "month": int(month), "day": int(day)}


def _time_of_day(text: str) -> dict[str, int]:
    """A time (13:05:07.5) -> the google.type.TimeOfDay message's JSON, zero fields left
    out, as crud_meta.wire_time_of_day_out."""
    clock, _, fraction = text.partition(".")
    hours, minutes, seconds = (int(part) for part in clock.split(":"))
    nanos = int(fraction.ljust(9, "0")[:9]) if fraction else 0
    values = {"hours": hours, "minutes": minutes, "seconds": seconds, "nanos": nanos}
    return {name: value for name, value in values.items() if value}


# Columns in a wire domain (relay.json names them: pgoutput only gives the domain's oid).
WIRE: dict[str, Callable[[str], object]] = {
    "int64": as_text, "decimal": as_text, "bytes": _bytes, "duration": _duration,
    "date": _date, "time_of_day": _time_of_day,
}


def converter(type_oid: int, wire: str = "") -> Callable[[str], object]:
    """How one column's text becomes JSON; `wire` is its wire kind, "[]"-suffixed for lists."""
    if wire:
        element = WIRE[wire.removesuffix("[]")]
        if wire.endswith("[]"):
            return lambda text: parse_array(text, element)
        return element
    scalar = SCALARS.get(type_oid)
    if scalar is not None:
        return scalar
    element = ARRAYS.get(type_oid)
    if element is not None:
        return lambda text: parse_array(text, element)
    return as_text


def commit_time(microseconds: int) -> datetime:
    return PG_EPOCH + timedelta(microseconds=microseconds)


def commit_iso(microseconds: int) -> str:
    """commit_time(microseconds).isoformat(), the whole seconds formatted once for all the
    commits within them (with one-row transactions that is thousands of times a second)."""
    seconds, fraction = divmod(microseconds, 1_000_000)
    whole = _second_iso(seconds)
    return f"{whole[:-6]}.{fraction:06d}+00:00" if fraction else whole


@functools.lru_cache(maxsize=8)
def _second_iso(seconds: int) -> str:
    return commit_time(seconds * 1_000_000).isoformat()
