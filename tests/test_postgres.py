"""Generated migrations on a real PostgreSQL: they apply, and the database behaves as configured."""

from __future__ import annotations

import json
import time
from collections import Counter
from decimal import Decimal

import psycopg
import pytest
from psycopg import errors

from .support import EXAMPLES, EXAMPLES_DIR, as_request, from_textproto, model_of


def example(name: str) -> dict[str, str]:
    return from_textproto(EXAMPLES_DIR / name / f"{name}.textproto", ["postgres"])



@pytest.mark.parametrize("name", EXAMPLES)
def test_every_example_applies_and_reapplying_is_a_no_op(name, database, tmp_path):
    files = example(name)
    first = database.migrate(files, tmp_path)
    assert first.returncode == 0, first.stderr
    applied = {line.split()[1] for line in first.stdout.splitlines() if line.startswith("applying")}
    expected = {p.split("/")[1] for p in files if p.endswith(".sql")}
    assert applied == expected
    ledger = database.query("SELECT name, checksum, applied_at FROM crud_meta.migrations")
    second = database.migrate(files, tmp_path)
    assert second.returncode == 0, second.stderr
    assert "applying" not in second.stdout
    assert database.query("SELECT name, checksum, applied_at FROM crud_meta.migrations") == ledger


@pytest.mark.parametrize("name", EXAMPLES)
def test_tables_match_the_model(name, database, tmp_path):
    assert database.migrate(example(name), tmp_path).returncode == 0
    backend = model_of(name)
    for entity in backend.entities:
        rows = database.query(
            "SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            (f'"{backend.database.schema}"."{entity.name}"',),
        )
        assert rows == [(c.name, c.column_type, not c.nullable) for c in entity.columns]


def test_seeded_rows_exist_and_reseeding_adds_nothing(database, tmp_path):
    files = example("storefront")
    assert database.migrate(files, tmp_path).returncode == 0
    rows = database.query("SELECT sku, name, price, tags FROM shop.product ORDER BY sku")
    assert rows == [
        ("BK-1", "SQL Cookbook", Decimal("39.50"), ["sql", "databases"]),
        ("BK-2", "Stream Processing", Decimal("45.00"), []),
        ("LAP-1", "Laptop", Decimal("999.99"), []),
    ]
    # Force the seed file to run again: the rows keep their ids and nothing is duplicated.
    ids = database.query("SELECT id FROM shop.product ORDER BY sku")
    database.query("DELETE FROM crud_meta.migrations WHERE name = '0500_seed.sql'")
    assert database.migrate(files, tmp_path).returncode == 0
    assert database.query("SELECT id FROM shop.product ORDER BY sku") == ids


def test_product_by_category_counts(database, tmp_path):
    assert database.migrate(example("product"), tmp_path).returncode == 0
    categories = ["Books", "Books", "Electronics", None, "Books", "Garden"]
    with database.connect() as conn:
        for i, category in enumerate(categories):
            conn.execute("INSERT INTO product (name, price, category) VALUES (%s, %s, %s)",
                         (f"item {i}", Decimal("1.50") * i, category))
    got = dict(database.query("SELECT category, count FROM products_by_category()"))
    assert got == dict(Counter(categories))
    volatility = database.query("SELECT provolatile FROM pg_proc WHERE proname = "
                                "'products_by_category'")
    assert volatility == [("s",)]  # STABLE: PostgREST may serve it on GET


def test_article_endpoints(database, tmp_path):
    assert database.migrate(example("article"), tmp_path).returncode == 0
    articles = [
        ("a", ["rust", "db"], True),
        ("b", ["python"], False),
        ("c", ["rust"], True),
        ("d", [], None),
    ]
    with database.connect() as conn:
        for title, tags, published in articles:
            conn.execute(
                "INSERT INTO article (title, tags, published) VALUES (%s, %s, coalesce(%s, "
                "false))", (title, json.dumps(tags), published))
            conn.commit()
            time.sleep(0.01)  # distinct created_at for the ORDER BY
    published = [r[0] for r in database.query("SELECT title FROM articles_published()")]
    assert published == [t for t, _, p in reversed(articles) if p]
    for tag in ("rust", "python", "none"):
        got = [r[0] for r in database.query("SELECT title FROM articles_by_tag(%s)", (tag,))]
        assert got == [t for t, tags, _ in reversed(articles) if tag in tags]
    default = database.query("SELECT published FROM article WHERE title = 'd'")
    assert default == [(False,)]


@pytest.mark.parametrize(
    ("name", "sql", "error"),
    [
        ("order", "INSERT INTO \"order\" (customer_email, total_amount, status) "
                  "VALUES ('a@b.c', 1, 'lost')", errors.CheckViolation),
        ("order", "INSERT INTO \"order\" (customer_email, total_amount) VALUES (NULL, 1)",
         errors.NotNullViolation),
        ("product", "INSERT INTO product (name, price) VALUES (NULL, 1)",
         errors.NotNullViolation),
        ("storefront", "INSERT INTO shop.order_items (product_id, quantity, price) "
                       "VALUES (gen_random_uuid(), 1, 1)", errors.ForeignKeyViolation),
        ("storefront", "INSERT INTO shop.product (sku, name, price, cost) "
                       "VALUES ('X', 'x', 1, 2)", errors.CheckViolation),
        ("storefront", "INSERT INTO shop.product (sku, name, price, cost) "
                       "VALUES ('X', '', 1, 1)", errors.CheckViolation),
        ("storefront", "INSERT INTO shop.product (sku, name, price, cost) "
                       "VALUES ('LAP-1', 'dup', 1, 1)", errors.UniqueViolation),
        ("storefront", "INSERT INTO shop.customer (email, name, user_id) "
                       "VALUES ('not-an-email', 'n', 'u')", errors.CheckViolation),
        ("storefront", "INSERT INTO shop.customer (email, name, tier, user_id) "
                       "VALUES ('a@b.c', 'n', 'platinum', 'u')", errors.CheckViolation),
    ],
)
def test_bad_rows_are_rejected(name, sql, error, database, tmp_path):
    assert database.migrate(example(name), tmp_path).returncode == 0
    with pytest.raises(error), database.connect() as conn:
        conn.execute(sql)


def test_good_rows_are_accepted(database, tmp_path):
    assert database.migrate(example("order"), tmp_path).returncode == 0
    database.query("INSERT INTO \"order\" (customer_email, total_amount, status) "
                   "VALUES ('a@b.c', 10.5, 'paid'), ('d@e.f', 3, NULL)")
    assert database.query("SELECT count(*) FROM \"order\"") == [(2,)]


def test_updated_at_moves_and_created_at_stays(database, tmp_path):
    assert database.migrate(example("product"), tmp_path).returncode == 0
    with database.connect(autocommit=True) as conn:
        row_id, created, updated = conn.execute(
            "INSERT INTO product (name, price) VALUES ('x', 1) "
            "RETURNING id, created_at, updated_at").fetchone()
        time.sleep(0.01)
        conn.execute("UPDATE product SET price = 2, created_at = '2000-01-01' WHERE id = %s",
                     (row_id,))
        created2, updated2 = conn.execute(
            "SELECT created_at, updated_at FROM product WHERE id = %s", (row_id,)).fetchone()
    assert created2 == created
    assert updated2 > updated


def test_change_capture_publication(database, tmp_path):
    assert database.migrate(example("storefront"), tmp_path).returncode == 0
    tables = database.query("SELECT schemaname, tablename FROM pg_publication_tables "
                            "WHERE pubname = 'crud_changes' ORDER BY tablename")
    assert tables == [("shop", "customer"), ("shop", "order_items"), ("shop", "product")]
    identities = database.query("SELECT relname, relreplident FROM pg_class WHERE relname IN "
                                "('customer', 'order_items', 'product') ORDER BY relname")
    assert identities == [("customer", "f"), ("order_items", "f"), ("product", "f")]
    slot = database.query("SELECT lsn IS NOT NULL FROM pg_create_logical_replication_slot("
                          "'test_slot', 'pgoutput')")
    assert slot == [(True,)]
    database.query("INSERT INTO shop.customer (email, name, user_id) VALUES ('a@b.c', 'n', 'u')")
    changes = database.query(
        "SELECT count(*) FROM pg_logical_slot_peek_binary_changes('test_slot', NULL, NULL, "
        "'proto_version', '1', 'publication_names', 'crud_changes')")
    assert changes[0][0] >= 3  # BEGIN, INSERT, COMMIT (plus RELATION)
    database.query("SELECT pg_drop_replication_slot('test_slot')")


OPERATIONS = {
    "read": "SELECT count(*) FROM {t}",
    "create": "INSERT INTO {t} DEFAULT VALUES",
    "update": "UPDATE {t} SET updated_at = now()",
    "delete": "DELETE FROM {t}",
}


def attempt(conn: psycopg.Connection, role: str, claims: dict | None, sql: str) -> bool:
    """Run one statement as PostgREST would for a request; True when it was permitted."""
    return as_request(conn, role, claims, sql) is not errors.InsufficientPrivilege


@pytest.mark.parametrize("name", EXAMPLES)
def test_anon_can_do_exactly_what_the_config_allows(name, database, tmp_path):
    assert database.migrate(example(name), tmp_path).returncode == 0
    backend = model_of(name)
    anon = backend.auth.anon_role
    with database.connect(autocommit=True) as conn:
        for entity in backend.entities:
            table = f'"{backend.database.schema}"."{entity.name}"'
            for operation, sql in OPERATIONS.items():
                allowed = anon in getattr(entity.access, operation)
                assert attempt(conn, anon, None, sql.format(t=table)) == allowed, (
                    entity.name, operation)
            assert not any(
                database.query("SELECT has_table_privilege(%s, %s, %s)",
                               (backend.auth.authenticator_role, table, p))[0][0]
                for p in ("SELECT", "INSERT", "UPDATE", "DELETE")
            )
        for endpoint in backend.endpoints:
            args = ", ".join(f"NULL::{p.sql_type}" for p in endpoint.params)
            call = f'SELECT * FROM "{backend.database.schema}"."{endpoint.function}"({args})'
            assert attempt(conn, anon, None, call) == (anon in endpoint.roles), endpoint.path


def test_owner_sees_and_changes_only_their_rows(database, tmp_path):
    assert database.migrate(example("storefront"), tmp_path).returncode == 0
    alice, bob = {"sub": "alice", "role": "authenticated"}, {"sub": "bob", "role": "authenticated"}
    with database.connect(autocommit=True) as conn:
        def as_user(claims, sql, role="authenticated"):
            with conn.transaction():
                conn.execute("SELECT set_config('request.jwt.claims', %s, true)",
                             (json.dumps(claims),))
                conn.execute(f'SET LOCAL ROLE "{role}"')
                return conn.execute(sql).fetchall()

        made = as_user(alice, "INSERT INTO shop.customer (email, name) "
                              "VALUES ('a@x.io', 'Alice') RETURNING user_id")
        assert made == [("alice",)]  # the owner column defaults to the caller
        as_user(bob, "INSERT INTO shop.customer (email, name) VALUES ('b@x.io', 'Bob') "
                     "RETURNING id")
        assert as_user(alice, "SELECT name FROM shop.customer") == [("Alice",)]
        assert as_user(bob, "UPDATE shop.customer SET name = 'x' WHERE email = 'a@x.io' "
                            "RETURNING id") == []
        assert as_user(bob, "DELETE FROM shop.customer RETURNING name") == [("Bob",)]
        with pytest.raises(errors.InsufficientPrivilege):
            as_user(bob, "INSERT INTO shop.customer (email, name, user_id) "
                         "VALUES ('c@x.io', 'Eve', 'alice')")
        admin = {"sub": "root", "role": "admin"}
        assert as_user(admin, "SELECT name FROM shop.customer", role="admin") == [("Alice",)]


@pytest.mark.parametrize(("name", "table", "value_type"), [
    ("product", "public.product_metrics", "bigint"),  # product_analytics: COUNT
    ("storefront", "shop.revenue_metrics", "numeric"),  # revenue_tracking: SUM(price)
])
def test_aggregation_output_tables(name, table, value_type, database, tmp_path):
    assert database.migrate(example(name), tmp_path).returncode == 0
    columns = database.query(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = "
        "%s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum", (table,))
    assert columns == [("window_start", "timestamp with time zone"),
                       ("window_end", "timestamp with time zone"),
                       ("value", value_type), ("updated_at", "timestamp with time zone")]
    upsert = (f"INSERT INTO {table} (window_start, window_end, value) VALUES "
              "('2026-01-01 10:00+00', '2026-01-01 10:05+00', %s) ON CONFLICT "
              "(window_start, window_end) DO UPDATE SET value = EXCLUDED.value")
    with database.connect(autocommit=True) as conn:
        for value in (3, 5):  # a replayed window arrives again with its final value
            with conn.transaction():
                conn.execute("SET LOCAL ROLE crud_pipeline")
                conn.execute(upsert, (value,))
    assert database.query(f"SELECT value FROM {table}") == [(5,)]
    with database.connect(autocommit=True) as conn:
        assert attempt(conn, "authenticated", {"role": "authenticated"},
                       f"SELECT count(*) FROM {table}")
        assert not attempt(conn, "authenticated", {"role": "authenticated"},
                           f"DELETE FROM {table}")
        assert not attempt(conn, "anon", None, upsert.replace("%s", "1"))
