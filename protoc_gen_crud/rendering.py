"""Jinja2 environment shared by the template-based targets, with all quoting in named filters.

Templates never build quoted text by hand: identifiers go through `ident`/`qualified`, SQL
string literals through `literal`. StrictUndefined turns a misspelt variable into an error
instead of an empty string in generated SQL.
"""

from __future__ import annotations

import functools
import re
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


def nginx_str(value: object) -> str:
    """A single-quoted nginx string. `$` would start a variable, so it is refused."""
    text = str(value)
    if "$" in text or "\x00" in text or "\n" in text:
        raise ValueError(f"cannot put {text!r} into an nginx string")
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


_NGINX_PATH = re.compile(r"^[A-Za-z0-9._~/-]+$")


def nginx_path(value: object) -> str:
    """A bare path or name in nginx.conf (locations, table and function names). The model
    only lets such characters through; this re-checks instead of trusting that."""
    text = str(value)
    if not _NGINX_PATH.match(text):
        raise ValueError(f"{text!r} is not a plain path for nginx")
    return text


def regex(value: object) -> str:
    """Text matched literally inside an nginx (PCRE) regular expression."""
    text = str(value)
    if "$" in text or any(c.isspace() for c in text):
        raise ValueError(f"cannot match {text!r} in an nginx regex")
    return re.escape(text)


def lua_str(value: object) -> str:
    """A Lua string literal."""
    text = str(value)
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return '"' + escaped.replace("\r", "\\r").replace("\x00", "\\0") + '"'


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
        nginx_str=nginx_str,
        nginx_path=nginx_path,
        regex=regex,
        lua_str=lua_str,
    )
    return env


def render(template: str, **context: object) -> str:
    return environment().get_template(template).render(**context)
