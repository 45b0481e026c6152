"""Jinja2 environment shared by the template-based targets, with all quoting in named filters.

Templates never build quoted text by hand: identifiers go through `ident`/`qualified`, SQL
string literals through `literal`. StrictUndefined turns a misspelt variable into an error
instead of an empty string in generated SQL.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import jinja2

from .resources import templates_dir


def ident(name: str) -> str:
    """A PostgreSQL identifier, always quoted: "order" stays a table name, not a keyword."""
    if "\x00" in name:
        raise ValueError("identifier contains NUL")
    return '"' + name.replace('"', '""') + '"'


def qualified(name: str, schema: str) -> str:
    """schema.name, both quoted."""
    return f"{ident(schema)}.{ident(name)}"


def literal(value: object) -> str:
    """A standard-conforming SQL string literal."""
    text = str(value)
    if "\x00" in text:
        raise ValueError("literal contains NUL")
    return "'" + text.replace("'", "''") + "'"


def idents(names: Iterable[str]) -> str:
    """A comma-separated list of quoted identifiers."""
    return ", ".join(ident(n) for n in names)


def text_array(values: Iterable[str]) -> str:
    """A text[] constructor of literals, e.g. ARRAY['a', 'b']::text[]."""
    items = [literal(v) for v in values]
    return f"ARRAY[{', '.join(items)}]::text[]"


def sql_comment(text: str) -> str:
    """Text safe to put after `--` on one line."""
    return " ".join(str(text).split())


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters.update(
        ident=ident,
        qualified=qualified,
        literal=literal,
        idents=idents,
        text_array=text_array,
        sql_comment=sql_comment,
    )
    return env


def render(template: str, **context: object) -> str:
    return environment().get_template(template).render(**context)
