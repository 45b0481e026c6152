"""PostgreSQL target: versioned, convergent migrations plus the psql driver with its ledger.

File order is the apply order: foundation helpers, roles, one file per entity, foreign keys,
custom endpoints, change capture, default data. Files are named after what they hold rather
than numbered by history: each one states the wanted end state, and the ledger re-applies a
file only when its checksum changed (see migrate.psql).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .. import aggregates
from ..model import Backend, Entity
from ..rendering import render as render_template
from .relay import RELAY_ROLE

FOLDER = "migrations"


@dataclass(frozen=True)
class _File:
    name: str
    checksum: str


def _entity(backend: Backend, entity: Entity, roles: tuple[str, ...]) -> str:
    access = entity.access
    grants = [
        ("SELECT", access.read),
        ("INSERT", access.create),
        ("UPDATE", access.update),
        ("DELETE", access.delete),
        ("SELECT, INSERT, UPDATE, DELETE", access.admin_roles),
    ]
    constraint_names = [c.name for c in entity.checks] + [
        f"{entity.name}_{c.name}_key" for c in entity.columns if c.unique
    ]
    return render_template(
        "postgres/entity.sql.j2",
        title=f"Table {entity.name}",
        db=backend.database,
        auth=backend.auth,
        entity=entity,
        known_keys=[c.key for c in entity.columns] + list(entity.retired_keys),
        constraint_names=constraint_names,
        grants=grants,
        all_roles=[*roles, backend.auth.authenticator_role],
    )


def render(backend: Backend) -> dict[str, str]:
    db, auth = backend.database, backend.auth
    roles = backend.api_roles
    files: list[tuple[str, str]] = [
        ("0001_foundation.sql", render_template(
            "postgres/foundation.sql.j2", title="Foundation: schemas and migration helpers",
            db=db)),
        ("0002_roles.sql", render_template(
            "postgres/roles.sql.j2", title="PostgREST roles", db=db, auth=auth,
            roles=roles, relay_role=RELAY_ROLE)),
    ]
    if backend.domains:
        files.append(("0003_wire.sql", render_template(
            "postgres/wire.sql.j2", title="Wire representations (proto3 JSON)",
            domains=backend.domains)))
    files += [(f"0100_{e.name}.sql", _entity(backend, e, roles)) for e in backend.entities]
    if any(e.foreign_keys for e in backend.entities):
        files.append(("0200_foreign_keys.sql", render_template(
            "postgres/foreign_keys.sql.j2", title="Foreign keys", db=db,
            entities=backend.entities)))
    if backend.endpoints:
        files.append(("0300_endpoints.sql", render_template(
            "postgres/endpoints.sql.j2", title="Custom endpoints", db=db,
            endpoints=backend.endpoints)))
    files.append(("0400_change_capture.sql", render_template(
        "postgres/change_capture.sql.j2", title="Change data capture", db=db,
        entities=backend.entities, streamed=backend.streamed)))
    outputs = [rule for rule in backend.rules if rule.output_table]
    if backend.rules:
        tables = [{
            "rule": rule,
            "columns": aggregates.output_columns(backend, rule),
            "key": aggregates.key_columns(rule),
            "readers": backend.entity(rule.entity).access.read,
        } for rule in outputs]
        files.append(("0450_aggregates.sql", render_template(
            "postgres/aggregates.sql.j2", title="Aggregation outputs", db=db, auth=auth,
            tables=tables, pipeline_role=aggregates.PIPELINE_ROLE,
            all_roles=[*roles, auth.authenticator_role],
            sources=sorted({rule.entity for rule in backend.rules}),
            # Without authentication every request is the anonymous role, Arroyo's too.
            writers=[aggregates.PIPELINE_ROLE]
            + ([auth.anon_role] if auth.type == "NONE" else []))))
    if any(e.seed for e in backend.entities):
        files.append(("0500_seed.sql", render_template(
            "postgres/seed.sql.j2", title="Default data", db=db, entities=backend.entities)))
    ledger = [_File(name, hashlib.sha256(text.encode()).hexdigest()) for name, text in files]
    out = {f"{FOLDER}/{name}": text for name, text in files}
    out[f"{FOLDER}/migrate.psql"] = render_template("postgres/migrate.psql.j2", files=ledger,
                                                    auth=auth, relay_role=RELAY_ROLE)
    return out
