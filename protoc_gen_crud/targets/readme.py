"""README target: `README.md` at the top of the output, the generated backend explaining itself.

Someone handed a generated folder should not need the .proto or this project's source to
know what it serves: the entities with their routes and who may use them, the custom
endpoints, the streams, how to start it, and a Mermaid ER diagram of the tables (the
picture people look at first). Everything is derived from the model here, in a stable order
(entities, endpoints and rules as declared, columns in table order, foreign keys sorted), so
the file changes only when the backend does. The gateway serves this file next to the API
reference page (openresty target), which links to it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..aggregates import key_columns, output_columns
from ..model import Backend, Column, Entity, ForeignKey, Rule
from ..rendering import GENERATED
from ..rendering import render as render_template
from . import compose, openresty
from .relay import topic

FILE = "README.md"
DOCS_PATH = "/docs"  # the reference page, below each base path
README_PATH = "/docs/README.md"  # where the gateway serves this file
# Mermaid's erDiagram lexer takes an attribute type as one word of letters, digits, `_`, `-`,
# `[]` and `()` (no spaces or commas): these SQL spellings get a one-word name, and the full
# type goes into the attribute's comment.
_SHORT_TYPES = {
    "timestamp with time zone": "timestamptz",
    "timestamp without time zone": "timestamp",
    "time without time zone": "time",
    "double precision": "float8",
}


@dataclass(frozen=True)
class Route:
    """One method on one path, and the roles that may call it."""

    method: str
    path: str
    roles: str
    what: str


@dataclass(frozen=True)
class Attribute:
    """A table column as the ER diagram writes it."""

    type: str
    name: str
    keys: str  # "", "PK", "FK", "UK" or a comma-separated mix
    comment: str


@dataclass(frozen=True)
class Table:
    name: str
    attributes: tuple[Attribute, ...]


@dataclass(frozen=True)
class Relationship:
    """`referenced <card>..<card> referencing : "column"` (one foreign key)."""

    referenced: str
    referencing: str
    left: str  # the referenced side: exactly one, or zero or one for a nullable column
    line: str  # "--" identifying (the column is part of the key), ".." otherwise
    right: str  # the referencing side: many, or at most one for a unique column
    label: str


def roles(names: tuple[str, ...]) -> str:
    return ", ".join(names) if names else "nobody"


def cell(text: object) -> str:
    """Text safe inside one Markdown table cell: one line, `|` escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def er_type(sql_type: str) -> str:
    """A SQL type as one Mermaid word: numeric(10,2) -> numeric, text[] stays text[]."""
    array = sql_type.endswith("[]")
    base = sql_type.removesuffix("[]")
    base = _SHORT_TYPES.get(base, re.sub(r"\(.*?\)", "", base).strip().replace(" ", "_"))
    return base + ("[]" if array else "")


def _put_roles(entity: Entity) -> str:
    create, update = roles(entity.access.create), roles(entity.access.update)
    return create if create == update else f"{create} to create, {update} to replace"


def entity_routes(entity: Entity) -> list[Route]:
    access = entity.access
    collection = entity.base_path + entity.path
    found = [
        Route("GET", collection, roles(access.read), "list, filter, order, page"),
        Route("POST", collection, roles(access.create), "create one row or a list"),
        Route("PATCH", collection, roles(access.update), "update the rows the filters select"),
        Route("DELETE", collection, roles(access.delete), "delete the rows the filters select"),
    ]
    if len(entity.primary_key) == 1:
        item = collection + "/{" + entity.primary_key[0] + "}"
        found += [
            Route("GET", item, roles(access.read), "one row (404 when there is none)"),
            Route("PATCH", item, roles(access.update), "change fields of one row"),
            Route("PUT", item, _put_roles(entity), "create or replace one row"),
            Route("DELETE", item, roles(access.delete), "delete one row"),
        ]
    if entity.streamed:
        found.append(Route("GET", f"/stream/sse/{entity.name}", roles(access.read),
                           "its changes as Server-Sent Events"))
    return found


def visibility(entity: Entity) -> str:
    """Who sees which rows (row-level security with an owner column, a tenant column or
    both): the tenant limit comes last because it holds over everything before it."""
    access = entity.access
    tenant = access.tenant_column
    if not access.owner_column and not tenant:
        return "Every row is visible to each role that may read."
    if not access.owner_column:
        text = "Every row is visible to each role that may read"
    else:
        text = (f"Row-level security: a caller sees and changes only rows whose "
                f"`{access.owner_column}` equals the token's user claim")
        if access.shared_read:
            text = (f"Row-level security: every reader sees all rows; a caller changes only "
                    f"rows whose `{access.owner_column}` equals the token's user claim")
        if access.admin_roles:
            text += f"; {roles(access.admin_roles)} may see and change all"
    if tenant:
        text += (f". Multi-tenant: every role sees and changes only the rows whose `{tenant}` "
                 "equals the token's tenant claim (set from it on insert; callers cannot "
                 "write it)")
        if access.platform_roles:
            text += f", except {roles(access.platform_roles)}, which cross tenants"
    return text + "."


def _keys(entity: Entity, column: Column, foreign: set[str]) -> str:
    keys = []
    if column.name in entity.primary_key:
        keys.append("PK")
    if column.name in foreign:
        keys.append("FK")
    if column.unique and column.name not in entity.primary_key:
        keys.append("UK")
    return ", ".join(keys)


def _comment(sql_type: str, nullable: bool) -> str:
    """The full SQL type where the diagram's word shortened it, and whether NULL is allowed
    (NOT NULL is what a field without `optional` gets)."""
    parts = [sql_type] if er_type(sql_type) != sql_type else []
    if nullable:
        parts.append("nullable")
    return ", ".join(parts)


def tables(backend: Backend) -> list[Table]:
    """Every table: the entities' in declared order, then the aggregation rules' outputs
    (keyed by window and group, with the `updated_at` their upserts move)."""
    found = []
    for entity in backend.entities:
        foreign = {fk.column for fk in entity.foreign_keys}
        found.append(Table(entity.name, tuple(
            Attribute(er_type(c.sql_type), c.name, _keys(entity, c, foreign),
                      _comment(c.sql_type, c.nullable))
            for c in entity.columns)))
    for rule in backend.rules:
        if rule.output_table:
            key = set(key_columns(rule))
            columns = [(c.name, c.sql_type) for c in output_columns(backend, rule)]
            columns.append(("updated_at", "timestamp with time zone"))
            found.append(Table(rule.output_table, tuple(
                Attribute(er_type(sql_type), name, "PK" if name in key else "",
                          _comment(sql_type, name == "value"))
                for name, sql_type in columns)))
    return found


def relationship(entity: Entity, fk: ForeignKey) -> Relationship:
    column = entity.column(fk.column)
    return Relationship(
        referenced=fk.table,
        referencing=entity.name,
        left="|o" if column.nullable else "||",
        line="--" if fk.column in entity.primary_key else "..",
        right="o|" if column.unique or entity.primary_key == (fk.column,) else "o{",
        label=fk.column,
    )


def relationships(backend: Backend) -> list[Relationship]:
    found = [relationship(e, fk) for e in backend.entities for fk in e.foreign_keys]
    return sorted(found, key=lambda r: (r.referencing, r.label))


def published_url(backend: Backend) -> str:
    port = compose.published_port(backend)
    return "http://localhost" + ("" if port == 80 else f":{port}")


def window(rule: Rule) -> str:
    kind = rule.window.type.lower()
    if rule.window.type == "SESSION":
        return f"session, gap {rule.window.interval}"
    if rule.window.slide:
        return f"{kind} {rule.window.interval} every {rule.window.slide}"
    return f"{kind} {rule.window.interval}"


def rule_outputs(rule: Rule) -> list[str]:
    outputs = []
    if rule.output_table:
        outputs.append(f"table `{rule.output_table}`")
    if rule.webhook_url:
        outputs.append(f"webhook {rule.webhook_url}")
    if rule.sse_channel:
        outputs.append(f"SSE `{rule.sse_channel}`")
    return outputs


def text(backend: Backend) -> str:
    bases = sorted({e.base_path for e in backend.entities})
    return render_template(
        "readme/README.md.j2",
        generated=GENERATED,
        backend=backend,
        bases=bases,
        docs_path=DOCS_PATH,
        url=published_url(backend),
        secrets=compose.secrets(backend),
        entities=[(e, entity_routes(e), visibility(e)) for e in backend.entities],
        endpoints=backend.endpoints,
        streamed=backend.streamed,
        topic=topic,
        rules=[(r, window(r), rule_outputs(r)) for r in backend.rules],
        tables=tables(backend),
        relationships=relationships(backend),
        roles=roles,
        cell=cell,
        health_parts=openresty.health_parts(backend),
    )


def render(backend: Backend) -> dict[str, str]:
    return {FILE: text(backend)}
