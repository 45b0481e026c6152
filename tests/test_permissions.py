"""PostgREST's permission model on the real database, for every example entity.

PostgREST runs each request as `SET LOCAL ROLE <role from the token, or anon>` with the
token's claims in `request.jwt.claims`; that is emulated here. Expected outcomes come from
each example's config (the model's access lists), not from the generated SQL.
"""

from __future__ import annotations

import pytest
from psycopg import errors

from .support import EXAMPLES, EXAMPLES_DIR, as_request, from_textproto, model_of

PERSONAS = {
    "anon": None,
    "alice": {"role": "authenticated", "sub": "alice"},
    "bob": {"role": "authenticated", "sub": "bob"},
    "admin": {"role": "admin", "sub": "root"},
}
STATEMENTS = {
    "read": "SELECT count(*) FROM {t}",
    "create": "INSERT INTO {t} DEFAULT VALUES",
    "update": "UPDATE {t} SET updated_at = now()",
    "delete": "DELETE FROM {t}",
}



def role_of(backend, persona: str) -> str:
    claims = PERSONAS[persona]
    return backend.auth.anon_role if claims is None else claims["role"]


def run_as(conn, backend, persona: str, sql: str):
    """One statement as PostgREST would run it for this persona (see as_request)."""
    return as_request(conn, role_of(backend, persona), PERSONAS[persona], sql)


@pytest.mark.parametrize("name", EXAMPLES)
def test_permission_matrix(name, database, tmp_path):
    assert database.migrate(from_textproto(EXAMPLES_DIR / name / f"{name}.textproto",
                                           ["postgres"]), tmp_path).returncode == 0
    backend = model_of(name)
    roles = set(backend.api_roles)
    checked = 0
    with database.connect(autocommit=True) as conn:
        for persona in PERSONAS:
            role = role_of(backend, persona)
            if role not in roles:
                continue
            for entity in backend.entities:
                table = f'"{backend.database.schema}"."{entity.name}"'
                for operation, sql in STATEMENTS.items():
                    allowed = (role in getattr(entity.access, operation)
                               or role in entity.access.admin_roles)
                    outcome = run_as(conn, backend, persona, sql.format(t=table))
                    refused = outcome is errors.InsufficientPrivilege
                    assert refused != allowed, (persona, entity.name, operation, outcome)
                    checked += 1
    assert checked >= 4 * len(backend.entities) * 2  # anon and at least one more persona


def test_owner_rows_in_the_matrix(database, tmp_path):
    """Row ownership: owner, another user, admin and anon on the same rows."""
    assert database.migrate(from_textproto(EXAMPLES_DIR / "storefront" /
                                           "storefront.textproto", ["postgres"]),
                            tmp_path).returncode == 0
    backend = model_of("storefront")
    database.query("INSERT INTO shop.customer (email, name, user_id) VALUES "
                   "('a@x.io', 'Alice', 'alice'), ('b@x.io', 'Bob', 'bob')")
    expected = {
        # persona: (rows read, rows updated, rows deleted)
        "alice": ([("Alice",)], 1, 1),
        "bob": ([("Bob",)], 1, 1),
        "admin": ([("Alice",), ("Bob",)], 2, 2),
    }
    with database.connect(autocommit=True) as conn:
        for persona, (rows, updated, deleted) in expected.items():
            assert run_as(conn, backend, persona,
                          "SELECT name FROM shop.customer ORDER BY name") == rows, persona
            assert run_as(conn, backend, persona,
                          "UPDATE shop.customer SET name = name || '!'") == updated, persona
            assert run_as(conn, backend, persona, "DELETE FROM shop.customer") == deleted
        # Another user's row cannot be targeted, even by its key.
        assert run_as(conn, backend, "bob",
                      "UPDATE shop.customer SET name = 'x' WHERE email = 'a@x.io'") == 0
        # Nobody can create a row in someone else's name.
        assert run_as(conn, backend, "bob", "INSERT INTO shop.customer (email, name, user_id) "
                      "VALUES ('c@x.io', 'Eve', 'alice')") is errors.InsufficientPrivilege
        for operation in ("read", "create", "update", "delete"):
            outcome = run_as(conn, backend, "anon", STATEMENTS[operation].format(
                t="shop.customer"))
            assert outcome is errors.InsufficientPrivilege, operation


@pytest.mark.parametrize("name", EXAMPLES)
def test_no_api_role_may_maintain_tables(name, database, tmp_path):
    """PostgreSQL 17 added the MAINTAIN privilege (VACUUM, ANALYZE, CLUSTER, REINDEX, LOCK
    TABLE, REFRESH MATERIALIZED VIEW), part of `GRANT ALL`. The generated grants name each
    privilege, so no API role gets it on 17+; on 15 the privilege does not exist at all."""
    assert database.migrate(from_textproto(EXAMPLES_DIR / name / f"{name}.textproto",
                                           ["postgres"]), tmp_path).returncode == 0
    backend = model_of(name)
    major = int(database.query("SHOW server_version_num")[0][0]) // 10000
    tables = [f'"{backend.database.schema}"."{e.name}"' for e in backend.entities]
    roles = sorted(set(backend.api_roles) | {"authenticator"})
    if major < 17:
        with pytest.raises(errors.InvalidParameterValue):
            database.query("SELECT has_table_privilege(%s, %s, 'MAINTAIN')",
                           (roles[0], tables[0]))
        return
    for role in roles:
        for table in tables:
            (holds,) = database.query("SELECT has_table_privilege(%s, %s, 'MAINTAIN')",
                                      (role, table))[0]
            assert not holds, (role, table)
