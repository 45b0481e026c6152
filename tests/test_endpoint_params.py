"""Custom endpoint parameters get the types PostgreSQL infers for them.

The reference is PostgreSQL itself: each query is prepared with its parameters' types left
open (`PREPARE`), and `pg_prepared_statements.parameter_types` says what the server inferred.
Every example's endpoints and a matrix of parameter positions are compared with what the
generator wrote into the endpoint functions' signatures.
"""

from __future__ import annotations

import pytest

from protoc_gen_crud import param_types

from .support import EXAMPLES, EXAMPLES_DIR, from_text, from_textproto, model_of


def server_types(database, schema: str, query: str) -> list[str]:
    """The parameter types PostgreSQL infers for `query` (as it prints them)."""
    with database.connect(autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        conn.execute(f"PREPARE crud_probe AS {query}")
        (types,) = conn.execute("SELECT parameter_types::text[] FROM pg_prepared_statements "
                                "WHERE name = 'crud_probe'").fetchone()
    return list(types)


def columns_of(backend) -> dict[str, dict[str, str]]:
    return {e.name: {c.name: c.sql_type for c in e.columns} for e in backend.entities}


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_example_endpoint_matches_postgresql(name, database, tmp_path):
    files = from_textproto(EXAMPLES_DIR / name / f"{name}.textproto", ["postgres"])
    assert database.migrate(files, tmp_path).returncode == 0
    backend = model_of(name)
    checked = 0
    for endpoint in backend.endpoints:
        if not endpoint.params:
            continue
        # The examples declare no type that differs from the server's inference, so every
        # parameter's signature type must be the server's.
        inferred = server_types(database, backend.database.schema, endpoint.query)
        assert [p.sql_type for p in endpoint.params] == inferred, endpoint.path
        checked += 1
    assert checked or not any(e.params for e in backend.endpoints)


# Queries on the storefront example's tables, each parameter in another position.
MATRIX = [
    "SELECT * FROM product WHERE stock < $1 ORDER BY price LIMIT $2",
    "SELECT * FROM product WHERE $1 > price OFFSET $2",
    "SELECT * FROM product p WHERE p.price BETWEEN $1 AND $2",
    "SELECT * FROM product WHERE category IN ($1, $2, $3)",
    "SELECT * FROM product WHERE sku = ANY($1)",
    "SELECT * FROM product WHERE name LIKE $1 OR name ILIKE $2",
    "SELECT * FROM product WHERE attributes ? $1 AND attributes ?| $2",
    "SELECT * FROM product WHERE attributes @> $1",
    "SELECT * FROM product WHERE tags @> $1",
    "SELECT * FROM product WHERE stock > $1::int AND price < CAST($2 AS numeric)",
    "SELECT * FROM product WHERE created_at > $1::timestamptz - interval '1 day'",
    "UPDATE product SET stock = stock + $2, active = $3 WHERE sku = $1 RETURNING sku",
    "INSERT INTO customer (email, name, tier) VALUES ($1, $2, $3) RETURNING id",
    "SELECT o.quantity FROM order_items o JOIN product p ON p.id = o.product_id "
    "WHERE o.quantity >= $1 AND p.id = $2 AND o.shipped_at < $3",
    "SELECT $1 AS echo, lower($2)",
    "SELECT count(*) FROM order_items WHERE price * quantity > $1",
]


def test_matrix_of_positions_matches_postgresql(database, tmp_path):
    files = from_textproto(EXAMPLES_DIR / "storefront" / "storefront.textproto", ["postgres"])
    assert database.migrate(files, tmp_path).returncode == 0
    backend = model_of("storefront")
    tables = columns_of(backend)
    for query in MATRIX:
        server = server_types(database, backend.database.schema, query)
        ours = param_types.infer(query, tables)
        assert [ours.get(n, "text") for n in range(1, len(server) + 1)] == server, query


def test_the_issue_query_migrates_and_runs(database, tmp_path):
    """`WHERE stock < $1 ... LIMIT $2` with undeclared params: an integer and a bigint
    argument, so the migration applies and the endpoint answers."""
    files = from_text('''
        entity {
          name: "product"
          fields { name: "id" type: SQL_TYPE_BIGSERIAL }
          fields { name: "sku" type: SQL_TYPE_TEXT }
          fields { name: "stock" type: SQL_TYPE_INTEGER }
          fields { name: "price" type: SQL_TYPE_DECIMAL }
          api {
            access { read: ["anon"] }
            custom_endpoints {
              path: "/products/low-stock"
              sql_query: "SELECT sku FROM product WHERE stock < $1 ORDER BY price LIMIT $2"
              roles: ["anon"]
            }
          }
        }
    ''', targets=["postgres"])
    done = database.migrate(files, tmp_path)
    assert done.returncode == 0, done.stderr
    database.query("INSERT INTO public.product (sku, stock, price) VALUES "
                   "('a', 1, 3), ('b', 2, 1), ('c', 9, 2)")
    (signature,) = database.query(
        "SELECT pg_get_function_identity_arguments(p.oid) FROM pg_proc p "
        "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public' "
        "AND p.proname = 'products_low_stock'")[0]
    assert signature == "p1 integer, p2 bigint"
    rows = database.query("SELECT sku FROM public.products_low_stock(p1 => 5, p2 => 1)")
    assert rows == [("b",)]


def test_declared_types_win(database, tmp_path):
    """storefront's restock declares amount INTEGER and leaves sku open (text, as inferred)."""
    backend = model_of("storefront")
    restock = next(e for e in backend.endpoints if e.path == "/products/restock")
    assert [(p.name, p.sql_type) for p in restock.params] == [("sku", "text"),
                                                            ("amount", "integer")]
    open_param = param_types.infer("SELECT 1 FROM product WHERE stock < $1",
                                        columns_of(backend))
    assert open_param == {1: "integer"}


def test_a_query_postgresql_rejects_names_its_endpoint_and_the_types_it_infers(database,
                                                                               tmp_path):
    """A declared type PostgreSQL cannot use there fails the migration naming the endpoint,
    with the types PostgreSQL itself takes the parameters for (PREPARE's inference)."""
    files = from_text('''
        entity {
          name: "product"
          fields { name: "stock" type: SQL_TYPE_INTEGER }
          api {
            access { read: ["anon"] }
            custom_endpoints {
              path: "/products/low-stock"
              sql_query: "SELECT stock FROM product WHERE stock < $1 LIMIT $2"
              params { name: "below" type: SQL_TYPE_TEXT }
              params { name: "n" type: SQL_TYPE_TEXT }
              roles: ["anon"]
            }
          }
        }
    ''', targets=["postgres"])
    done = database.migrate(files, tmp_path)
    assert done.returncode != 0
    assert ("endpoint GET /api/v1/products/low-stock: operator does not exist: integer < text"
            in done.stderr)
    assert "PostgreSQL takes the parameters for $1 integer, $2 bigint" in done.stderr
    assert "(the generator gave text, text)" in done.stderr


def test_endpoint_results_are_in_the_wire_form(database, tmp_path):
    """An endpoint returning 64-bit integers, decimals, bytes or durations returns them as the
    tables are read: PostgREST applies no representation to a function's result."""
    files = from_text('''
        entity {
          name: "part"
          fields { name: "big" type: SQL_TYPE_BIGINT constraints { not_null: true } }
          fields { name: "price" type: SQL_TYPE_DECIMAL precision: 10 scale: 2 }
          fields { name: "took" type: SQL_TYPE_INTERVAL }
          fields { name: "note" type: SQL_TYPE_TEXT }
          api {
            access { read: ["anon"] create: ["anon"] }
            custom_endpoints {
              path: "/parts/big"
              sql_query: "SELECT big, price, took, note FROM part WHERE big > $1"
              roles: ["anon"]
            }
            custom_endpoints {
              path: "/parts/add"
              method: "POST"
              sql_query: "INSERT INTO part (big, note) VALUES ($1, $2) RETURNING big, note"
              roles: ["anon"]
            }
          }
        }
    ''', targets=["postgres"])
    assert database.migrate(files, tmp_path).returncode == 0, "migrates"
    database.query("INSERT INTO public.part (big, price, took, note) VALUES "
                   "(9007199254740993, 10.5, interval '1.5 seconds', 'x')")
    # As PostgREST reads a function's result: json_agg of its rows.
    (body,) = database.query("SELECT json_agg(r) FROM public.parts_big(p1 => 0) r")[0]
    assert body == [{"big": "9007199254740993", "price": "10.50", "took": "1.500s",
                     "note": "x"}]
    (added,) = database.query("SELECT json_agg(r) FROM public.parts_add(p1 => 7, p2 => 'y') r")[0]
    assert added == [{"big": "7", "note": "y"}]
