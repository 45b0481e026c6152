"""Custom endpoint parameters get the types PostgreSQL infers for them, and a query
PostgreSQL refuses is reported at generation, at the endpoint's file:line:column.

The reference is PostgreSQL itself: each query is prepared with its parameters' types left
open (`PREPARE`), and `pg_prepared_statements.parameter_types` says what the server inferred.
Every example's endpoints and a matrix of parameter positions are compared with what the
generator wrote into the endpoint functions' signatures; a corpus of queries the server
refuses must each be refused by the generator, and none of the matrix may be.
"""

from __future__ import annotations

import json
import re

import jsonschema
import psycopg
import pytest

from protoc_gen_crud import endpoint_query
from protoc_gen_crud.diagnostics import GenerationError

from .support import EXAMPLES, EXAMPLES_DIR, from_text, from_textproto, model_of

STOREFRONT = EXAMPLES_DIR / "storefront" / "storefront.textproto"


def server_types(database, schema: str, query: str) -> list[str]:
    """The parameter types PostgreSQL infers for `query` (as it prints them)."""
    with database.connect(autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        conn.execute(f"PREPARE crud_probe AS {query}")
        (types,) = conn.execute("SELECT parameter_types::text[] FROM pg_prepared_statements "
                                "WHERE name = 'crud_probe'").fetchone()
    return list(types)


def columns_of(backend) -> dict[str, dict[str, endpoint_query.ColumnType]]:
    return {e.name: {c.name: endpoint_query.ColumnType(c.sql_type, c.column_type)
                     for c in e.columns} for e in backend.entities}


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_example_endpoint_matches_postgresql(name, database, tmp_path):
    files = from_textproto(EXAMPLES_DIR / name / f"{name}.textproto", ["postgres"])
    assert database.migrate(files, tmp_path).returncode == 0
    backend = model_of(name)
    checked = 0
    for endpoint in backend.endpoints:
        # The result's columns read from the query are the function's (a wire domain's
        # column is returned as its JSON); a type the reader leaves open is the server's.
        rows = database.query(
            "SELECT a.name, format_type(a.t, NULL) FROM pg_proc p JOIN pg_namespace n ON "
            "n.oid = p.pronamespace, unnest(p.proallargtypes, p.proargmodes, p.proargnames) "
            "WITH ORDINALITY AS a(t, mode, name, o) WHERE n.nspname = %s AND p.proname = %s "
            "AND a.mode = 't' ORDER BY a.o", (backend.database.schema, endpoint.function))
        assert [c.name for c in endpoint.columns] == [r[0] for r in rows], endpoint.path
        for column, (_, server) in zip(endpoint.columns, rows, strict=True):
            if column.sql_type:
                wire = column.sql_type.startswith("crud_meta.")
                assert ("json" if wire else endpoint_query.base_type(column.sql_type)) == \
                    server, (endpoint.path, column)
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
    # Positions a token-by-token reading got wrong.
    "SELECT * FROM product WHERE stock < coalesce($1, 0)",
    "SELECT * FROM product WHERE length(name) > $1",
    "SELECT * FROM product WHERE stock < ($1)",
    "SELECT * FROM product WHERE price < $1 * 2",
    "SELECT * FROM product WHERE EXTRACT(year FROM created_at) = $1",
    "SELECT * FROM product WHERE (stock, price) < ($1, $2)",
    # A wire-domain column assigned: the domain itself.
    "UPDATE product SET price = $1 WHERE id = $2",
    "INSERT INTO order_items (product_id, quantity, price) VALUES ($1, $2, $3) RETURNING id",
    "INSERT INTO order_items (product_id, quantity, price) "
    "SELECT id, $1, price FROM product WHERE sku = $2 RETURNING id",
    "SELECT * FROM product WHERE attributes ->> $1 = $2",
    "SELECT * FROM product WHERE attributes -> $1 = $2",
    "SELECT * FROM product WHERE attributes #>> $1 = 'x'",
    "SELECT * FROM product WHERE tags && $1 OR $2 = ANY(tags)",
    "SELECT * FROM product WHERE name || $1 = $2",
    "SELECT * FROM product WHERE abs(stock - $1) < $2",
    "SELECT * FROM product WHERE round(price, $1) > $2",
    "SELECT * FROM product WHERE CASE WHEN stock > 0 THEN $1 ELSE price END > 0",
    "SELECT * FROM product WHERE CASE stock WHEN $1 THEN true ELSE false END",
    "SELECT * FROM product WHERE stock IN (SELECT quantity FROM order_items WHERE price > $1)",
    "SELECT * FROM product WHERE stock > (SELECT max(quantity) FROM order_items) - $1",
    "SELECT * FROM product WHERE $1 AND NOT $2",
    "SELECT * FROM product WHERE active = $1 AND -stock < $2",
    "SELECT * FROM product WHERE date_trunc('day', created_at) = $1",
    "SELECT * FROM product WHERE created_at > now() - interval '1 day' * $1",
    "SELECT * FROM product WHERE created_at > now() - make_interval(days => $1)",
    "SELECT * FROM product WHERE created_at::date = $1",
    "SELECT * FROM product WHERE created_at AT TIME ZONE 'UTC' > $1",
    "SELECT * FROM product WHERE stock BETWEEN $1 AND $2 + 1",
    "SELECT count(*) FILTER (WHERE stock > $1) FROM product",
    "SELECT * FROM product WHERE greatest(stock, $1) > 5 AND nullif(stock, $2) IS NULL",
    "SELECT * FROM product WHERE stock IS DISTINCT FROM $1",
    "WITH t AS (SELECT sku, stock FROM product) SELECT * FROM t WHERE stock > $1",
    "SELECT * FROM (SELECT sku, stock * 2 AS s FROM product) x WHERE x.s > $1",
    "SELECT * FROM product WHERE name ~* $1 OR name SIMILAR TO $2",
    "SELECT * FROM product WHERE created_at - $1 > interval '1 day' + $2",
    "SELECT * FROM product WHERE to_char(created_at, $1) = $2",
    "SELECT * FROM product WHERE position($1 in name) > 0 AND substring(name from $2) = 'a'",
    "SELECT * FROM product WHERE cardinality(tags) > $1 AND jsonb_array_length(attributes) > $2",
    "SELECT * FROM product p WHERE EXISTS (SELECT 1 FROM order_items o "
    "WHERE o.product_id = p.id AND o.quantity > $1)",
    "SELECT sum(stock), avg(price) FROM product HAVING sum(stock) > $1 AND avg(price) > $2",
    "SELECT * FROM jsonb_to_recordset($1) AS x(a int) WHERE a > 0",
    "SELECT sku, count(*) AS n FROM product GROUP BY sku ORDER BY n DESC LIMIT $1",
    "SELECT * FROM product, LATERAL (SELECT count(*) AS c FROM order_items o "
    "WHERE o.product_id = product.id) s WHERE s.c > $1",
    "SELECT * FROM product WHERE $1::int IS NULL OR stock = $1",
]

# Queries PostgreSQL refuses, each for another reason: the generator must refuse each too.
REFUSED = [
    "SELECT * FROM prodcut",
    "SELECT stok FROM product",
    "SELECT p.stok FROM product p",
    "SELECT x.sku FROM product p",
    "SELECT id FROM product p JOIN order_items o ON o.product_id = p.id",
    "SELECT * FROM product WHERE name = 5",
    "SELECT * FROM product WHERE active = 1",
    "SELECT * FROM product WHERE created_at > now() - $1",
    "SELECT * FROM product WHERE created_at > current_date + $1",
    "SELECT * FROM product WHERE created_at::date > current_date - $1",
    "SELECT * FROM product WHERE stock = ANY(ARRAY[$1, $2])",
    "SELECT * FROM product WHERE id = $1::bigint + $2",
    "SELECT * FROM product WHERE $1 IS NULL OR stock = $1",
    "SELECT * FROM product WHERE stock > 1 ORDER BY",
    "SELECT * FROM product WHERE stock >",
    "SELECT * FORM product",
    "UPDATE product SET stok = 1 WHERE sku = $1 RETURNING sku",
    "INSERT INTO customer (email, nam) VALUES ($1, $2) RETURNING id",
]


def test_matrix_of_positions_matches_postgresql(database, tmp_path):
    files = from_textproto(EXAMPLES_DIR / "storefront" / "storefront.textproto", ["postgres"])
    assert database.migrate(files, tmp_path).returncode == 0
    backend = model_of("storefront")
    tables = columns_of(backend)
    for query in MATRIX:
        server = server_types(database, backend.database.schema, query)
        reading = endpoint_query.read(query, tables, backend.database.schema)
        assert not reading.problems, (query, reading.problems)
        ours = reading.params
        assert [ours.get(n, "text") for n in range(1, len(server) + 1)] == server, query


def operation_schema(document: dict, path: str) -> dict:
    operation = next(iter(document["paths"][path].values()))
    return operation["responses"]["200"]["content"]["application/json"]["schema"]


def with_endpoint(query: str, method: str = "POST") -> str:
    """The storefront example with one more endpoint, on the line after the first entity's
    `custom_endpoints {`, so its position is known."""
    text = STOREFRONT.read_text()
    quoted = query.replace("\\", "\\\\").replace('"', '\\"')
    block = (f'custom_endpoints {{ path: "/probe" method: "{method}" sql_query: "{quoted}" '
             'roles: ["admin"] }\n')
    at = text.index("custom_endpoints {")
    return text[:at] + block + text[at:]


def test_what_postgresql_refuses_the_generator_refuses(database, tmp_path):
    """Each query the server refuses (PREPARE fails) fails generation with a diagnostic at
    the endpoint's sql_query, naming the endpoint; nothing is generated."""
    files = from_textproto(STOREFRONT, ["postgres"])
    assert database.migrate(files, tmp_path).returncode == 0
    schema = model_of("storefront").database.schema
    text = STOREFRONT.read_text()
    line = text[:text.index("custom_endpoints {")].count("\n") + 1
    for i, query in enumerate(REFUSED):
        with database.connect(autocommit=True) as conn:
            conn.execute(f'SET search_path TO "{schema}"')
            with pytest.raises(psycopg.Error):
                conn.execute(f"PREPARE refused_{i} AS {query}")
        with pytest.raises(GenerationError) as caught:
            from_text(with_endpoint(query), "storefront.textproto")
        found = [str(d) for d in caught.value.diagnostics]
        assert any(re.match(rf"storefront\.textproto:{line}:\d+: custom endpoint '/probe'", d)
                   for d in found), (query, found)


def test_the_matrix_generates(database, tmp_path):
    """Every matrix query, as an endpoint, generates and migrates (its signature's types are
    the server's, compared above)."""
    for query in MATRIX[-6:]:
        files = from_text(with_endpoint(query), "storefront.textproto", targets=["postgres"])
        assert database.migrate(files, tmp_path / str(MATRIX.index(query))).returncode == 0, query


def test_a_get_endpoint_that_writes_is_refused():
    """PostgreSQL creates a STABLE function that updates, then refuses every call
    ("UPDATE is not allowed in a non-volatile function"): refused at generation."""
    with pytest.raises(GenerationError) as caught:
        from_text(with_endpoint("UPDATE product SET stock = 0 WHERE sku = $1", "GET"),
                  "storefront.textproto")
    assert any("a GET endpoint is read-only" in str(d) and "set method: \"POST\"" in str(d)
               for d in caught.value.diagnostics)


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
    """A declared type other than the inferred one is the signature's: `stock < $1` infers
    integer, `params { type: SQL_TYPE_BIGINT }` makes it bigint (and it still migrates)."""
    text = with_endpoint("SELECT sku FROM product WHERE stock < $1 LIMIT $2").replace(
        'roles: ["admin"] }', 'params { name: "below" type: SQL_TYPE_BIGINT } '
        'params { name: "n" type: SQL_TYPE_INTEGER } roles: ["admin"] }', 1)
    files = from_text(text, "storefront.textproto", targets=["postgres"])
    assert database.migrate(files, tmp_path).returncode == 0
    (signature,) = database.query(
        "SELECT pg_get_function_identity_arguments(p.oid) FROM pg_proc p "
        "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.proname = 'probe'")[0]
    assert signature == "below bigint, n integer"
    inferred = endpoint_query.read("SELECT sku FROM product WHERE stock < $1 LIMIT $2",
                                   columns_of(model_of("storefront"))).params
    assert inferred == {1: "integer", 2: "bigint"}


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
    ''', targets=["postgres", "openapi"])
    assert database.migrate(files, tmp_path).returncode == 0, "migrates"
    database.query("INSERT INTO public.part (big, price, took, note) VALUES "
                   "(9007199254740993, 10.5, interval '1.5 seconds', 'x')")
    # As PostgREST reads a function's result: json_agg of its rows.
    (body,) = database.query("SELECT json_agg(r) FROM public.parts_big(p1 => 0) r")[0]
    assert body == [{"big": "9007199254740993", "price": "10.50", "took": "1.500s",
                     "note": "x"}]
    (added,) = database.query("SELECT json_agg(r) FROM public.parts_add(p1 => 7, p2 => 'y') r")[0]
    assert added == [{"big": "7", "note": "y"}]
    # The OpenAPI document describes those rows as they come.
    document = json.loads(files["openapi/openapi.json"])
    for path, rows in (("/api/v1/parts/big", body), ("/api/v1/parts/add", added)):
        operation = next(iter(document["paths"][path].values()))
        schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
        assert set(schema["items"]["properties"]) == set(rows[0]), path
        jsonschema.Draft202012Validator(schema).validate(rows)
    wrong = [{**body[0], "big": 9007199254740993}]  # a number where the contract has a string
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(operation_schema(document, "/api/v1/parts/big")
                                        ).validate(wrong)
