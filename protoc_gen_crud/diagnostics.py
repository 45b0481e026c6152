"""User-facing errors: every problem with its place in the input, reported together.

Generation never stops at the first problem: a user fixing a config wants the whole list, in
input order, each line in the `file:line:column: message` form editors and CI logs link to.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True, order=True)
class Location:
    """A 1-based line and column in an input file (0 means unknown)."""

    file: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        if self.line <= 0:
            return self.file
        return f"{self.file}:{self.line}:{self.column or 1}"


@dataclass(frozen=True)
class Diagnostic:
    """One problem: where it is and what to do about it."""

    location: Location
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


class GenerationError(Exception):
    """Raised with every diagnostic found; nothing is written when it is raised."""

    def __init__(self, diagnostics: Iterable[Diagnostic]):
        self.diagnostics = sorted(set(diagnostics), key=lambda d: (d.location, d.message))
        super().__init__("\n".join(str(d) for d in self.diagnostics))


Path = tuple[str | int, ...]


@dataclass
class SourceMap:
    """Maps a path inside a `crud.v1.Backend` message to where the user wrote it.

    Paths are tuples of field names and repeated-field indexes, for example
    ("entity", 0, "fields", 2, "type"). Both front doors fill this map, so validation can
    point at the user's text without knowing which front door was used. Lookups fall back to
    the longest recorded prefix: a field's type error points at the field when the type
    itself has no recorded place.
    """

    default: Location
    places: dict[Path, Location] = field(default_factory=dict)

    def add(self, path: Path, location: Location) -> None:
        self.places.setdefault(path, location)

    def find(self, path: Path) -> Location:
        for end in range(len(path), -1, -1):
            hit = self.places.get(path[:end])
            if hit is not None:
                return hit
        return self.default


class Reporter:
    """Collects diagnostics against a SourceMap."""

    def __init__(self, sources: SourceMap):
        self.sources = sources
        self.diagnostics: list[Diagnostic] = []

    def error(self, path: Path, message: str) -> None:
        self.diagnostics.append(Diagnostic(self.sources.find(path), message))

    def raise_if_any(self) -> None:
        if self.diagnostics:
            raise GenerationError(self.diagnostics)
