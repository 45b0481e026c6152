"""Decoder for PostgreSQL's built-in `pgoutput` logical decoding protocol, version 1.

Only what the relay needs: Begin, Commit, Relation, Insert, Update, Delete (Truncate, Type,
Origin and Message are recognised and skipped). Column values arrive as text.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_INT8 = struct.Struct("!b")
_INT16 = struct.Struct("!h")
_INT32 = struct.Struct("!i")
UINT32 = struct.Struct("!I")  # also an Insert, Update or Delete's relation oid
# Begin (final LSN, commit time, xid) and Commit (flags, commit LSN, end LSN, commit time)
# read in one call each: with one-row transactions they are two of every three messages.
_BEGIN = struct.Struct("!QqI")
COMMIT = struct.Struct("!bQQq")
# Where an Insert's new tuple starts: kind, relation oid, 'N'.
INSERT_VALUES = 6
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


@dataclass(slots=True)
class Change:
    """Insert ('I'), Update ('U') or Delete ('D') of one row; values are text or None."""

    action: str
    relation_oid: int
    new: list[object] | None = None
    old: list[object] | None = None


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
        values, self.pos = values_at(self.data, self.pos)
        return values


def values_at(data: bytes, pos: int) -> tuple[list[object], int]:
    """The column values of a TupleData starting at `pos` (text, None for NULL, UNCHANGED),
    and the position after it. The relay reads an Insert's values with it straight from the
    message (INSERT_VALUES), without decoding the message into a Change first; it runs for
    every column of every change, hence the unrolled byte tests."""
    count = (data[pos] << 8) | data[pos + 1]
    pos += 2
    values: list[object] = []
    append = values.append
    for _ in range(count):
        kind = data[pos]
        if kind == 116 or kind == 98:  # 't' text, 'b' binary
            length = UINT32.unpack_from(data, pos + 1)[0]
            pos += 5
            append(data[pos:pos + length].decode())
            pos += length
        elif kind == 110:  # 'n' null
            pos += 1
            append(None)
        elif kind == 117:  # 'u' unchanged TOASTed value
            pos += 1
            append(UNCHANGED)
        else:
            raise ValueError(f"unknown tuple value kind {chr(kind)!r}")
    return values, pos


def decode(data: bytes) -> Begin | Commit | Relation | Change | None:
    """One pgoutput message; None for kinds the relay does not use."""
    kind = data[0]
    if kind == 66:  # 'B'
        return Begin(*_BEGIN.unpack_from(data, 1))
    if kind == 67:  # 'C'
        _flags, commit_lsn, end_lsn, commit_time = COMMIT.unpack_from(data, 1)
        return Commit(commit_lsn, end_lsn, commit_time)
    r = Reader(data)
    kind = r.byte()
    if kind == "R":
        oid = r.take(UINT32)
        schema, table = r.cstring(), r.cstring()
        r.byte()  # replica identity setting
        columns = []
        for _ in range(r.take(_INT16)):
            r.take(_INT8)  # flags (part of the key)
            name = r.cstring()
            type_oid = r.take(UINT32)
            r.take(_INT32)  # type modifier
            columns.append(Column(name, type_oid))
        return Relation(oid, schema or "pg_catalog", table, columns)
    if kind == "I":
        oid = r.take(UINT32)
        r.byte()  # 'N'
        return Change("I", oid, new=r.tuple())
    if kind == "U":
        oid = r.take(UINT32)
        marker = r.byte()
        old = None
        if marker in ("K", "O"):
            old = r.tuple()
            marker = r.byte()
        return Change("U", oid, new=r.tuple(), old=old)
    if kind == "D":
        oid = r.take(UINT32)
        r.byte()  # 'K' or 'O'
        return Change("D", oid, old=r.tuple())
    return None  # Truncate, Type, Origin, Message
