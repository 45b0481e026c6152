"""Decoder for PostgreSQL's built-in `pgoutput` logical decoding protocol, version 1.

Only what the relay needs: Begin, Commit, Relation, Insert, Update, Delete (Truncate, Type,
Origin and Message are recognised and skipped). Column values arrive as text.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

_INT8 = struct.Struct("!b")
_INT16 = struct.Struct("!h")
_INT32 = struct.Struct("!i")
_UINT32 = struct.Struct("!I")
_INT64 = struct.Struct("!q")
_UINT64 = struct.Struct("!Q")
# Begin (final LSN, commit time, xid) and Commit (flags, commit LSN, end LSN, commit time)
# read in one call each: with one-row transactions they are two of every three messages.
_BEGIN = struct.Struct("!QqI")
_COMMIT = struct.Struct("!bQQq")
UNCHANGED = object()  # an unchanged TOASTed value the server did not resend


@dataclass(slots=True)
class Begin:
    final_lsn: int
    commit_time: int  # microseconds since 2000-01-01 UTC
    xid: int


@dataclass(slots=True)
class Commit:
    commit_lsn: int
    end_lsn: int
    commit_time: int


@dataclass
class Column:
    name: str
    type_oid: int


@dataclass
class Relation:
    oid: int
    schema: str
    table: str
    columns: list[Column]
    converters: list = field(default_factory=list)  # filled by the relay, once per relation


@dataclass(slots=True)
class Change:
    """Insert ('I'), Update ('U') or Delete ('D') of one row; values are text or None."""

    action: str
    relation_oid: int
    new: list[object] | None = None
    old: list[object] | None = None
    extra: dict = field(default_factory=dict)


class Reader:
    """Cursor over one message's bytes."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, fmt: struct.Struct):
        value = fmt.unpack_from(self.data, self.pos)[0]
        self.pos += fmt.size
        return value

    def byte(self) -> str:
        value = chr(self.data[self.pos])
        self.pos += 1
        return value

    def cstring(self) -> str:
        end = self.data.index(0, self.pos)
        value = self.data[self.pos:end].decode()
        self.pos = end + 1
        return value

    def tuple(self) -> list[object]:
        data, pos = self.data, self.pos
        count = int.from_bytes(data[pos:pos + 2], "big")
        pos += 2
        values: list[object] = []
        append = values.append
        for _ in range(count):
            kind = data[pos]
            pos += 1
            if kind == 116 or kind == 98:  # 't' text, 'b' binary
                length = int.from_bytes(data[pos:pos + 4], "big")
                pos += 4
                append(data[pos:pos + length].decode())
                pos += length
            elif kind == 110:  # 'n' null
                append(None)
            elif kind == 117:  # 'u' unchanged TOASTed value
                append(UNCHANGED)
            else:
                raise ValueError(f"unknown tuple value kind {chr(kind)!r}")
        self.pos = pos
        return values


def decode(data: bytes) -> Begin | Commit | Relation | Change | None:
    """One pgoutput message; None for kinds the relay does not use."""
    kind = data[0]
    if kind == 66:  # 'B'
        return Begin(*_BEGIN.unpack_from(data, 1))
    if kind == 67:  # 'C'
        _flags, commit_lsn, end_lsn, commit_time = _COMMIT.unpack_from(data, 1)
        return Commit(commit_lsn, end_lsn, commit_time)
    r = Reader(data)
    kind = r.byte()
    if kind == "R":
        oid = r.take(_UINT32)
        schema, table = r.cstring(), r.cstring()
        r.byte()  # replica identity setting
        columns = []
        for _ in range(r.take(_INT16)):
            r.take(_INT8)  # flags (part of the key)
            name = r.cstring()
            type_oid = r.take(_UINT32)
            r.take(_INT32)  # type modifier
            columns.append(Column(name, type_oid))
        return Relation(oid, schema or "pg_catalog", table, columns)
    if kind == "I":
        oid = r.take(_UINT32)
        r.byte()  # 'N'
        return Change("I", oid, new=r.tuple())
    if kind == "U":
        oid = r.take(_UINT32)
        marker = r.byte()
        old = None
        if marker in ("K", "O"):
            old = r.tuple()
            marker = r.byte()
        return Change("U", oid, new=r.tuple(), old=old)
    if kind == "D":
        oid = r.take(_UINT32)
        r.byte()  # 'K' or 'O'
        return Change("D", oid, old=r.tuple())
    return None  # Truncate, Type, Origin, Message
