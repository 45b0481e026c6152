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
from ..rules.entities import tenant_key_name
from .relay import RELAY_ROLE

FOLDER = "migrations"


@dataclass(frozen=True)
class _File:
    name: str
    checksum: str


def _grants(entity: Entity) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """(privilege, columns, roles) triples; no columns means the whole table. In a
    tenant-scoped entity only the platform roles may write the tenant column: the others get
    INSERT and UPDATE on every other column, so a caller cannot even name it."""
    access = entity.access
    grants: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
        ("SELECT", (), access.read),
        ("INSERT", (), access.create),
        ("UPDATE", (), access.update),
        ("DELETE", (), access.delete),
        ("SELECT, INSERT, UPDATE, DELETE", (), access.admin_roles),
    ]
    tenant = access.tenant_column
    if not tenant:
        return grants
    writable = tuple(c.name for c in entity.columns if c.name != tenant)
    platform = set(access.platform_roles)
    split = []
    for privilege, _, roles in grants[:4] + [("SELECT, DELETE", (), access.admin_roles)]:
        if privilege in ("INSERT", "UPDATE"):
            split.append((privilege, writable, tuple(r for r in roles if r not in platform)))
            split.append((privilege, (), tuple(r for r in roles if r in platform)))
        else:
            split.append((privilege, (), roles))
    for privilege in ("INSERT", "UPDATE"):
        split.append((privilege, writable,
                      tuple(r for r in access.admin_roles if r not in platform)))
        split.append((privilege, (), tuple(r for r in access.admin_roles if r in platform)))
    return split


def _index_columns(entity: Entity) -> dict[str, tuple[str, ...]]:
    """Each index's columns as created: in a tenant-scoped entity a B-tree index starts with
    the tenant column, so a unique index is unique per tenant and lookups within a tenant (the
    only ones row-level security allows) use it. Other methods cannot lead with a plain
    column (GIN, hash) or gain nothing from it (BRIN), so they stay as declared."""
    tenant = entity.access.tenant_column
    return {ix.name: (tenant, *(c for c in ix.columns if c != tenant))
            if tenant and ix.method == "btree" else ix.columns for ix in entity.indexes}


def _output_tenancy(source: Entity) -> dict[str, object]:
    """How a rule's output table keeps tenants apart: its source's tenant column (a group of
    every result), and the readers held to their tenant (all but the platform roles)."""
    access = source.access
    tenant = access.tenant_column
    return {
        "tenant": tenant,
        "tenant_uuid": bool(tenant) and source.column(tenant).kind == "UUID",
        "bound": tuple(r for r in access.read if r not in access.platform_roles),
    }


def _entity(backend: Backend, entity: Entity, roles: tuple[str, ...]) -> str:
    grants = _grants(entity)
    tenant_key = tenant_key_name(entity)
    constraint_names = [c.name for c in entity.checks] + [
        f"{entity.name}_{c.name}_key" for c in entity.columns if c.unique
    ] + ([tenant_key] if tenant_key else [])
    return render_template(
        "postgres/entity.sql.j2",
        title=f"Table {entity.name}",
        db=backend.database,
        auth=backend.auth,
        entity=entity,
        known_keys=[c.key for c in entity.columns] + list(entity.retired_keys),
        constraint_names=constraint_names,
        grants=grants,
        tenant_key=tenant_key,
        index_columns=_index_columns(entity),
        all_roles=[*roles, backend.auth.authenticator_role],
    )


def render(backend: Backend) -> dict[str, str]:
    db, auth = backend.database, backend.auth
    roles = backend.api_roles
    tenancy = any(e.access.tenant_column for e in backend.entities)
    files: list[tuple[str, str]] = [
        ("0001_foundation.sql", render_template(
            "postgres/foundation.sql.j2", title="Foundation: schemas and migration helpers",
            db=db, tenancy=tenancy)),
        ("0002_roles.sql", render_template(
            "postgres/roles.sql.j2", title="PostgREST roles", db=db, auth=auth,
            roles=roles, relay_role=RELAY_ROLE, tenancy=tenancy)),
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
            **_output_tenancy(backend.entity(rule.entity)),
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
