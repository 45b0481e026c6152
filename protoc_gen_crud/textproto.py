"""The config front door: a textproto `crud.v1.Backend` file (the seed's `configs/*.textproto`).

The seed writes multi-line strings as `\"\"\"...\"\"\"`, which protobuf text format does not
know; they are rewritten to ordinary escaped strings first, keeping every line where it was so
that reported line numbers still match the user's file.
"""

from __future__ import annotations

import re
import textwrap

from google.protobuf import descriptor, text_encoding, text_format

from .diagnostics import Diagnostic, GenerationError, Location, Path, SourceMap
from .gen.crud.v1 import options_pb2

_TRIPLE = re.compile(r'("""|\'\'\')(.*?)\1', re.S)


def rewrite_triple_quoted(text: str) -> str:
    """Turn each triple-quoted string into a one-line escaped string plus the lost newlines.

    The content is dedented and stripped of surrounding blank lines, the way a reader of the
    config sees it.
    """

    def one(match: re.Match[str]) -> str:
        body = textwrap.dedent(match.group(2)).strip("\n").rstrip()
        escaped = text_encoding.CEscape(body.encode("utf-8"), as_utf8=True)
        return '"' + escaped + '"' + "\n" * match.group(0).count("\n")

    return _TRIPLE.sub(one, text)


def load(text: str, filename: str) -> tuple[options_pb2.Backend, SourceMap]:
    """Parse a config; on a syntax error raise GenerationError pointing at the spot."""
    plain = rewrite_triple_quoted(text)
    backend = options_pb2.Backend()
    try:
        text_format.Parse(plain, backend)
    except text_format.ParseError as exc:
        line = exc.GetLine() or 0
        column = exc.GetColumn() or 0
        message = re.sub(r"^\d+:\d+ : ", "", str(exc))
        raise GenerationError(
            [Diagnostic(Location(filename, line, column), f"syntax error: {message}")]
        ) from None
    sources = SourceMap(Location(filename, 1, 1))
    _Scanner(plain, filename, sources).message(backend.DESCRIPTOR, (), None)
    return backend, sources


class _Scanner:
    """Walks the tokens alongside the descriptor and records where each path starts."""

    def __init__(self, text: str, filename: str, sources: SourceMap):
        self.tok = text_format.Tokenizer(text.splitlines())
        self.filename = filename
        self.sources = sources

    def here(self) -> Location:
        return Location(self.filename, self.tok._line + 1, self.tok._column + 1)

    def message(self, desc: descriptor.Descriptor, prefix: Path, close: str | None) -> None:
        tok = self.tok
        counts: dict[str, int] = {}
        while not tok.AtEnd() and tok.token != close:
            place = self.here()
            name = tok.token
            tok.NextToken()
            field = desc.fields_by_name.get(name)
            if field is None:  # parse already succeeded, so this cannot happen; stay robust
                return
            repeated = field.is_repeated
            tok.TryConsume(":")
            if repeated and tok.token == "[":
                self.sources.add(prefix + (name,), place)
                tok.NextToken()
                while tok.token != "]":
                    index = counts.get(name, 0)
                    self.value(field, prefix + (name, index), self.here())
                    counts[name] = index + 1
                    tok.TryConsume(",")
                tok.NextToken()
            else:
                index = counts.get(name, 0)
                if repeated:
                    self.sources.add(prefix + (name,), place)
                path = prefix + ((name, index) if repeated else (name,))
                self.value(field, path, place)
                counts[name] = index + 1
            if not tok.TryConsume(","):
                tok.TryConsume(";")

    def value(self, field: descriptor.FieldDescriptor, path: Path, place: Location) -> None:
        tok = self.tok
        self.sources.add(path, place)
        if field.message_type is not None and tok.token in ("{", "<"):
            close = "}" if tok.token == "{" else ">"
            tok.NextToken()
            self.message(field.message_type, path, close)
            tok.NextToken()
            return
        if tok.token == "-":
            tok.NextToken()
        tok.NextToken()
        while tok.token[:1] in ("'", '"'):  # adjacent string literals concatenate
            tok.NextToken()
