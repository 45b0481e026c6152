"""Change events: what the relay writes to each entity's Redis stream.

An entry is `XADD <topic> <id> data <CloudEvent JSON>`, the layout Dapr's pubsub.redis
component reads (the relay trims the streams itself: retention.py). The id is
`<commit LSN>-<change number within the transaction>`: increasing in commit order, and the
same every time a change is replayed.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from .pgoutput import UNCHANGED, Change, Relation
from .values import as_text, commit_iso, converter

RESERVED = ("table_name", "action", "old", "commit_time", "commit_lsn")
TYPES = {"I": "insert", "U": "update", "D": "delete"}


@dataclass(frozen=True)
class Table:
    """How one streamed table is published (from relay.json)."""

    entity: str
    topic: str
    max_len: int
    retention_max_len: int = 0  # 0: the same as max_len
    trimmed_key: str = ""  # where the newest trimmed-away id is recorded ("" : topic.trimmed)
    wire: dict[str, str] | None = None  # column -> wire kind ("int64", "bytes[]", ...)
    # The tenant column of a tenant-scoped entity: its value becomes the CloudEvent's
    # `tenant` extension attribute, so Dapr subscribers can route without reading the data.
    tenant: str = ""


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


class Encoder:
    """How one streamed table's changes become event data: its column names and converters
    worked out once per Relation message (a schema change sends a new one, and gets a new
    Encoder), so that each change only converts the values that need it. Text columns pass
    through as they are."""

    __slots__ = ("converted", "names", "source", "table")

    def __init__(self, relation: Relation, table: Table, source: str = ""):
        wire = table.wire or {}
        self.table, self.source = table, source
        self.names = [column.name for column in relation.columns]
        converters = [converter(c.type_oid, wire.get(c.name, "")) for c in relation.columns]
        self.converted = [(i, name, convert) for i, (name, convert)
                          in enumerate(zip(self.names, converters, strict=True))
                          if convert is not as_text]

    def fill(self, out: dict, values: list[object], fallback: list[object] | None = None,
             update: bool = False) -> dict:
        """The row's columns by name, added to `out`. An unchanged TOASTed value (only in an
        update's new row) is taken from the old row when the table sends it."""
        if update and UNCHANGED in values:
            values = [(fallback[i] if fallback is not None else None)
                      if value is UNCHANGED else value for i, value in enumerate(values)]
        out.update(zip(self.names, values, strict=True))
        for i, name, convert in self.converted:
            value = values[i]
            if value is not None:
                out[name] = convert(value)
        return out

    def data(self, action: str, new: list[object] | None, old: list[object] | None,
             commit_lsn: str, commit_iso: str) -> dict:
        """The event data: table_name, action, the row's columns by name, old values, the
        commit's time and position."""
        data: dict = {"table_name": self.table.entity, "action": action}
        old_row = self.fill({}, old) if old is not None else None
        if action == "D":
            data.update(old_row or {})
        else:
            self.fill(data, new or [], old, action == "U")
        if old_row is not None:
            data["old"] = old_row
        data["commit_time"] = commit_iso
        data["commit_lsn"] = commit_lsn
        return data


def change_data(relation: Relation, change: Change, table: Table, commit_lsn: int,
                commit_us: int) -> dict:
    """One decoded change's event data (Encoder.data, as the relay writes it)."""
    return Encoder(relation, table).data(change.action, change.new, change.old,
                                         format_lsn(commit_lsn), commit_iso(commit_us))


def cloud_event(event_id: str, data: dict, table: Table, source: str, pubsub: str) -> bytes:
    """The CloudEvents 1.0 envelope Dapr expects in the stream's `data` field.

    `data` is always the last key: the gateway forwards its bytes to SSE clients unchanged.
    A tenant-scoped entity's events carry the row's tenant (a deleted row's: `data` holds
    it) as the `tenant` extension attribute, a string as CloudEvents requires.

    The envelope is the same JSON object as a dict in this key order would serialize to,
    written from parts: the per-table parts are serialized once (envelope_parts), each
    event serializes only its id, time, tenant and data.
    """
    head, middle, after_time = envelope_parts(table, source, pubsub, data["action"])
    tenant = b""
    if table.tenant and data.get(table.tenant) is not None:
        tenant = b',"tenant":' + orjson.dumps(str(data[table.tenant]))
    return (head + orjson.dumps(event_id) + middle + orjson.dumps(data["commit_time"])
            + after_time + tenant + b',"data":' + orjson.dumps(data) + b"}")


_PARTS: dict[tuple[str, str, str, str, str], tuple[bytes, bytes, bytes]] = {}


def envelope_parts(table: Table, source: str, pubsub: str,
                   action: str) -> tuple[bytes, bytes, bytes]:
    """The envelope's constant JSON for one table, source, pubsub and action: before `id`,
    between `id` and `time`, and after `time` (`topic`, `pubsubname`)."""
    key = (table.entity, table.topic, source, pubsub, action)
    parts = _PARTS.get(key)
    if parts is None:
        parts = _PARTS[key] = (
            b'{"specversion":"1.0","id":',
            b',"source":' + orjson.dumps(source) + b',"type":'
            + orjson.dumps(f"crud.{table.entity}.{TYPES[action]}")
            + b',"datacontenttype":"application/json","time":',
            b',"topic":' + orjson.dumps(table.topic) + b',"pubsubname":' + orjson.dumps(pubsub))
    return parts
