"""What every rules module shares: the problem reporter, identifier and uniqueness checks,
and the naming helpers. The Builder is assembled from one mixin per section of
`options.proto` (entities and fields, api/access/endpoints, streams and rules), each in its
own module, the way protovalidate keeps one rules module per kind."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable

from ..diagnostics import Path, Reporter, SourceMap
from ..gen.crud.v1 import options_pb2 as pb

IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
MAX_IDENTIFIER_BYTES = 63
DEFAULT_BASE_PATH = "/api/v1"
SEED_NAMESPACE = uuid.UUID("5b1d3d1e-7c3a-4f7e-9a55-63727564a001")
PARAM = re.compile(r"\$(\d+)")
QUOTED = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?\*/", re.S)
ACTIONS = {
    pb.REFERENTIAL_ACTION_UNSPECIFIED: "NO ACTION",
    pb.REFERENTIAL_ACTION_RESTRICT: "RESTRICT",
    pb.REFERENTIAL_ACTION_CASCADE: "CASCADE",
    pb.REFERENTIAL_ACTION_SET_NULL: "SET NULL",
    pb.REFERENTIAL_ACTION_SET_DEFAULT: "SET DEFAULT",
}
INDEX_METHODS = {
    pb.INDEX_TYPE_UNSPECIFIED: "btree",
    pb.INDEX_TYPE_BTREE: "btree",
    pb.INDEX_TYPE_HASH: "hash",
    pb.INDEX_TYPE_GIN: "gin",
    pb.INDEX_TYPE_GIST: "gist",
    pb.INDEX_TYPE_BRIN: "brin",
}
# Keys of a change event next to the row's columns (see relay/events.py).
STREAM_RESERVED = ("table_name", "action", "old", "commit_time", "commit_lsn")
NEEDS_TARGET = {"SUM", "AVG", "MIN", "MAX", "COUNT_DISTINCT", "STRING_AGG"}


def enum_name(enum: str, number: int) -> str:
    """SQL_TYPE_DECIMAL -> DECIMAL."""
    full = pb.DESCRIPTOR.enum_types_by_name[enum].values_by_number[number].name
    prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", enum).upper() + "_"
    return full.removeprefix(prefix)


def short_name(base: str, suffix: str) -> str:
    """A derived object name that fits PostgreSQL's 63 bytes, kept unique by a hash."""
    name = f"{base}_{suffix}"
    if len(name.encode()) <= MAX_IDENTIFIER_BYTES:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return name.encode()[: MAX_IDENTIFIER_BYTES - 9].decode(errors="ignore") + "_" + digest


def function_name(path: str) -> str:
    """/products/by-category -> products_by_category."""
    return re.sub(r"[^a-z0-9]+", "_", path.lower()).strip("_")


def query_parameters(query: str) -> list[int]:
    """The $n numbers a query uses, ignoring string literals, quoted names and comments."""
    return sorted({int(n) for n in PARAM.findall(QUOTED.sub(" ", query))})


class RulesBase:
    """Holds the message being read and the reporter every rule writes problems to."""

    def __init__(self, backend: pb.Backend, sources: SourceMap):
        self.msg = backend
        self.report = Reporter(sources)

    def error(self, path: Path, message: str) -> None:
        self.report.error(path, message)

    def identifier(self, path: Path, name: str, what: str) -> str:
        if not name:
            self.error(path, f"{what} has no name; give it a lower_snake_case name")
        elif len(name.encode()) > MAX_IDENTIFIER_BYTES:
            self.error(
                path,
                f"{what} name {name!r} is {len(name.encode())} bytes long; PostgreSQL keeps "
                f"only {MAX_IDENTIFIER_BYTES}, so it would be silently truncated. Shorten it",
            )
        elif not IDENTIFIER.match(name):
            self.error(
                path,
                f"{what} name {name!r} is not lower_snake_case ([a-z_][a-z0-9_]*); PostgreSQL "
                "folds unquoted names to lower case, so custom SQL could not refer to it. "
                "Rename it",
            )
        elif name.startswith("pg_") and what in ("role", "schema"):
            self.error(path, f"{what} name {name!r} is reserved by PostgreSQL (pg_ prefix)")
        return name

    def unique(self, items: Iterable[tuple[Path, str]], what: str, scope: str) -> None:
        seen: dict[str, Path] = {}
        for path, name in items:
            if not name:
                continue
            if name in seen:
                first = self.report.sources.find(seen[name])
                self.error(path, f"duplicate {what} {name!r} in {scope} (first defined at "
                                 f"{first}); {what} names must be unique")
            else:
                seen[name] = path
