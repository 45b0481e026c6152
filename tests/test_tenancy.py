"""Multi-tenancy on the real database: `access.tenant_field` (issue 18, the database part).

testdata/tenancy/ holds one backend in both front doors: `product` (public read within a
tenant, a UNIQUE sku and a unique index) and `purchase` (rows owned by users, a foreign key
to product), both tenant-scoped, with an `admin` role kept within its tenant and a
`platform` role that crosses tenants. Requests run as PostgREST runs them (support.as_request:
the role and `request.jwt.claims` per transaction; postgrest_sql for PostgREST's own
statements). Expected outcomes come from a small reference model of the rules written here,
not from the generated SQL.
"""

from __future__ import annotations

import json
import textwrap

import pytest
from psycopg import errors

from . import postgrest_sql
from .support import ROOT, as_request, from_text, from_textproto, protoc, read_tree

CONFIG = ROOT / "testdata" / "tenancy" / "tenancy.textproto"
PROTO = ROOT / "testdata" / "tenancy" / "tenancy.proto"

# persona: (role, claims); tenants "a" and "b"; the platform token names no tenant.
PERSONAS: dict[str, tuple[str, dict | None]] = {
    "anon": ("anon", None),
    "anon_a": ("anon", {"tenant_id": "a"}),
    "alice_a": ("authenticated", {"sub": "alice", "tenant_id": "a"}),
    "bob_a": ("authenticated", {"sub": "bob", "tenant_id": "a"}),
    "carol_b": ("authenticated", {"sub": "carol", "tenant_id": "b"}),
    "admin_a": ("admin", {"role": "admin", "sub": "root", "tenant_id": "a"}),
    "admin_b": ("admin", {"role": "admin", "sub": "root", "tenant_id": "b"}),
    "platform": ("platform", {"role": "platform", "sub": "ops"}),
}
# The rules the config states, as data: who may do what, who owns rows, who crosses tenants.
ACCESS = {
    "product": {"read": {"anon", "authenticated"}, "write": {"authenticated"},
                "admin": {"admin", "platform"}, "owner": None},
    "purchase": {"read": {"authenticated"}, "write": {"authenticated"},
                 "admin": {"admin", "platform"}, "owner": "user_id"},
}
PLATFORM = {"platform"}


@pytest.fixture
def shop(database, tmp_path):
    """The tenancy backend migrated, with rows of both tenants: the same SKU in each, and a
    purchase per user."""
    done = database.migrate(from_textproto(CONFIG, ["postgres"]), tmp_path)
    assert done.returncode == 0, done.stderr
    rows = database.query("""
        INSERT INTO shop.product (tenant_id, sku, name) VALUES
            ('a', 'A-1', 'Anvil'), ('b', 'A-1', 'Anvil'), ('b', 'B-2', 'Bolt')
        RETURNING tenant_id, sku, id::text""")
    ids = {(t, s): i for t, s, i in rows}
    database.query(f"""
        INSERT INTO shop.purchase (tenant_id, user_id, product_id, quantity) VALUES
            ('a', 'alice', '{ids['a', 'A-1']}', 1), ('a', 'bob', '{ids['a', 'A-1']}', 2),
            ('b', 'carol', '{ids['b', 'B-2']}', 3)""")
    return database


def rows_of(database, table: str) -> list[dict]:
    return [json.loads(r[0]) for r in database.query(
        f"SELECT row_to_json(t)::text FROM shop.{table} t ORDER BY id")]


def expected(table: str, persona: str, operation: str, rows: list[dict]) -> object:
    """What the rules allow: the ids the statement reaches, or "refused" (no privilege)."""
    role, claims = PERSONAS[persona]
    rules = ACCESS[table]
    admin = role in rules["admin"]
    if not (admin or role in rules["read" if operation == "read" else "write"]):
        return "refused"
    claims = claims or {}
    seen = [r for r in rows
            if (role in PLATFORM or r["tenant_id"] == claims.get("tenant_id"))
            and (admin or not rules["owner"] or r[rules["owner"]] == claims.get("sub"))]
    return sorted(r["id"] for r in seen)


STATEMENTS = {
    "read": "SELECT id::text FROM shop.{t}",
    "update": "UPDATE shop.{t} SET updated_at = now() RETURNING id::text",
    "delete": "DELETE FROM shop.{t} RETURNING id::text",
}


def outcome(conn, persona: str, sql: str) -> object:
    role, claims = PERSONAS[persona]
    result = as_request(conn, role, claims, sql)
    if result is errors.InsufficientPrivilege:
        return "refused"
    return sorted(r[0] for r in result)


def test_permission_matrix_two_tenants(shop):
    """Tenants by roles by operations by entities: every statement reaches exactly the rows of
    the caller's tenant that its role may reach (the platform role: every tenant's)."""
    checked = 0
    with shop.connect(autocommit=True) as conn:
        for table in ACCESS:
            rows = rows_of(shop, table)
            for persona in PERSONAS:
                for operation, sql in STATEMENTS.items():
                    want = expected(table, persona, operation, rows)
                    got = outcome(conn, persona, sql.format(t=table))
                    assert got == want, (table, persona, operation)
                    checked += 1
    assert checked == 2 * len(PERSONAS) * 3
    # The matrix is not vacuous: each tenant sees rows, and never the other's.
    with shop.connect(autocommit=True) as conn:
        assert len(outcome(conn, "alice_a", "SELECT id::text FROM shop.product")) == 1
        assert len(outcome(conn, "carol_b", "SELECT id::text FROM shop.product")) == 2
        assert len(outcome(conn, "admin_a", "SELECT id::text FROM shop.purchase")) == 2
        assert len(outcome(conn, "platform", "SELECT id::text FROM shop.purchase")) == 3
        assert outcome(conn, "anon", "SELECT id::text FROM shop.product") == []


INSERTS = {
    "product": "INSERT INTO shop.product (sku, name) VALUES ('N-1', 'New') "
               "RETURNING tenant_id",
    "purchase": "INSERT INTO shop.purchase (product_id, quantity) VALUES ('{pid}', 1) "
                "RETURNING tenant_id, user_id",
}


def test_insert_takes_the_callers_tenant(shop):
    """Create for every persona: the new row's tenant is the caller's claim; a caller
    without one (anon, or the platform token naming none) cannot create a row."""
    pid = {t: i for t, i in shop.query("SELECT tenant_id, id::text FROM shop.product "
                                       "WHERE sku = 'A-1'")}
    with shop.connect(autocommit=True) as conn:
        for persona, (role, claims) in PERSONAS.items():
            tenant = (claims or {}).get("tenant_id")
            for table, sql in INSERTS.items():
                got = as_request(conn, role, claims, sql.format(pid=pid.get(tenant, pid["a"])))
                rules = ACCESS[table]
                if role not in rules["write"] | rules["admin"]:
                    assert got is errors.InsufficientPrivilege, (persona, table)
                elif tenant is None:  # no claim: the tenant column stays NULL
                    assert got == "granted", (persona, table)
                else:
                    want = (tenant,) if table == "product" else (tenant, claims["sub"])
                    assert got == [want], (persona, table)


def test_a_guessed_id_of_another_tenant_is_not_found(shop):
    """alice (tenant a) with the id of tenant b's row: PostgREST's own GET, PATCH and
    DELETE statements reach 0 rows, exactly as for an id that exists nowhere, so the
    gateway answers 404 (not 403) and nothing tells the row exists."""
    other = shop.query("SELECT id::text FROM shop.product WHERE tenant_id = 'b' "
                       "AND sku = 'B-2'")[0][0]
    nowhere = "00000000-0000-4000-8000-000000000000"
    with shop.connect(autocommit=True) as conn:
        s = postgrest_sql.shape(conn, "shop", "product")
        settings = postgrest_sql.role_settings(conn)

        def request(persona: str, statement: tuple[str, tuple]) -> list:
            role, claims = PERSONAS[persona]
            with conn.transaction(force_rollback=True):
                postgrest_sql.begin_request(conn, role, claims, settings)
                row = conn.execute(*statement).fetchone()
                return json.loads(row[0]) if row else []

        delete = ("WITH pgrst_source AS (DELETE FROM shop.product WHERE id = %s RETURNING 1) "
                  "SELECT coalesce(json_agg(pgrst_source), '[]')::text FROM pgrst_source")
        for key in (other, nowhere):
            # PostgREST answers a singular request that found 0 rows with 406 (PGRST116),
            # which the gateway turns into 404 for /{id}: the same for both keys.
            assert request("alice_a", postgrest_sql.select(s, "id", key)) == [], key
            assert request("alice_a", postgrest_sql.update(s, {"name": "x"}, "id", key)) == []
            assert request("alice_a", (delete, (key,))) == []
        # The row is there for its own tenant: the empty result above is the tenant filter.
        assert len(request("carol_b", postgrest_sql.select(s, "id", other))) == 1
    assert shop.query("SELECT name FROM shop.product WHERE id = %s", (other,)) == [("Bolt",)]


def test_the_caller_cannot_set_or_change_the_tenant(shop):
    """Naming the tenant column is refused (no column privilege), for another tenant and
    for one's own alike, in PostgREST's insert and update; the admin role too. Only the
    platform role writes it."""
    mine = shop.query("SELECT id::text FROM shop.product WHERE tenant_id = 'a'")[0][0]
    with shop.connect(autocommit=True) as conn:
        s = postgrest_sql.shape(conn, "shop", "product")
        for persona in ("alice_a", "admin_a"):
            role, claims = PERSONAS[persona]
            for tenant in ("b", "a"):
                body = {"sku": "X-1", "name": "x", "tenant_id": tenant}
                for sql, params in (postgrest_sql.insert(s, body),
                                    postgrest_sql.update(s, {"tenant_id": tenant}, "id",
                                                         mine)):
                    got = as_request(conn, role, claims, _inline(conn, sql, params))
                    assert got is errors.InsufficientPrivilege, (persona, tenant, sql[:30])
        # The platform role may move a row and create one for a named tenant.
        role, claims = PERSONAS["platform"]
        assert as_request(conn, role, claims, "INSERT INTO shop.product (tenant_id, sku, "
                          "name) VALUES ('b', 'P-1', 'p') RETURNING tenant_id") == [("b",)]
    assert shop.query("SELECT tenant_id FROM shop.product WHERE id = %s", (mine,)) == [("a",)]


def _inline(conn, sql: str, params: tuple) -> str:
    """`sql` with its parameters bound as literals (as_request takes plain SQL)."""
    from psycopg import sql as psql
    return psql.SQL(sql.replace("%s", "{}")).format(
        *(psql.Literal(p) for p in params)).as_string(conn)


def test_unique_per_tenant(shop):
    """Both tenants already hold SKU A-1 (fixture); within one tenant a second A-1, or a
    second name under the unique index, is refused."""
    assert shop.query("SELECT count(*) FROM shop.product WHERE sku = 'A-1'") == [(2,)]
    with shop.connect(autocommit=True) as conn:
        role, claims = PERSONAS["alice_a"]
        for sql in ("INSERT INTO shop.product (sku, name) VALUES ('A-1', 'Other')",
                    "INSERT INTO shop.product (sku, name) VALUES ('Z-9', 'Anvil')"):
            with pytest.raises(errors.UniqueViolation):
                as_request(conn, role, claims, sql)
        role, claims = PERSONAS["carol_b"]
        assert as_request(conn, role, claims, "INSERT INTO shop.product (sku, name) "
                          "VALUES ('C-3', 'Anvil 2') RETURNING tenant_id") == [("b",)]


def test_a_foreign_key_stays_within_the_tenant(shop):
    """A purchase in tenant a naming tenant b's product is refused as if the product did not
    exist, also for the platform role writing both columns itself; the same id in b works."""
    other = shop.query("SELECT id::text FROM shop.product WHERE tenant_id = 'b' "
                       "AND sku = 'B-2'")[0][0]
    with shop.connect(autocommit=True) as conn:
        role, claims = PERSONAS["alice_a"]
        assert as_request(conn, role, claims, "INSERT INTO shop.purchase (product_id) "
                          f"VALUES ('{other}')") == "granted"  # ForeignKeyViolation
        role, claims = PERSONAS["carol_b"]
        assert as_request(conn, role, claims, "INSERT INTO shop.purchase (product_id) "
                          f"VALUES ('{other}') RETURNING tenant_id") == [("b",)]
    with pytest.raises(errors.ForeignKeyViolation):
        shop.query("INSERT INTO shop.purchase (tenant_id, user_id, product_id) "
                   f"VALUES ('a', 'alice', '{other}')")


def test_seeded_rows_go_to_the_default_tenant(shop):
    assert shop.query("SELECT tenant_id FROM shop.product WHERE sku = 'SEED-1'") == [("acme",)]


def test_both_front_doors_give_byte_identical_output(tmp_path):
    done = protoc(PROTO, tmp_path)
    assert done.returncode == 0, done.stderr
    assert read_tree(tmp_path) == from_textproto(CONFIG)


V1 = """
entity {
  name: "item"
  fields { name: "sku" type: SQL_TYPE_TEXT constraints { unique: true } }
  indexes { name: "idx_item_sku" fields: ["sku"] }
  ACCESS
}
entity {
  name: "line"
  fields { name: "item_id" type: SQL_TYPE_UUID constraints { foreign_key { entity: "item" } } }
  LINE
}
"""
TENANT_FIELD = 'fields { name: "tenant_id" type: SQL_TYPE_TEXT }'


def _version(tenant: str | None) -> str:
    if tenant is None:
        return V1.replace("ACCESS", "").replace("LINE", "")
    default = f'default_tenant: "{tenant}"' if tenant else ""
    access = (f'api {{ access {{ read: ["authenticated"] create: ["authenticated"] '
              f'tenant_field: "tenant_id" {default} }} }}')
    return textwrap.dedent(V1).replace("ACCESS", TENANT_FIELD + "\n  " + access).replace(
        "LINE", TENANT_FIELD + "\n  " + access)


def test_evolution_existing_rows_go_to_the_configured_tenant(database, tmp_path):
    """v1 without tenants holds rows; v2 makes both entities tenant-scoped with
    default_tenant "acme": every row converges to acme, none lost, and the tenant's users see
    them (uniques and the foreign key now include the tenant)."""
    assert database.migrate(from_text(_version(None), targets=["postgres"]),
                            tmp_path / "v1").returncode == 0
    database.query("INSERT INTO item (sku) SELECT 'S-' || i FROM generate_series(1, 20) i")
    database.query("INSERT INTO line (item_id) SELECT id FROM item")
    before = database.query("SELECT id, sku FROM item ORDER BY id")
    done = database.migrate(from_text(_version("acme"), targets=["postgres"]),
                            tmp_path / "v2")
    assert done.returncode == 0, done.stderr
    assert database.query("SELECT id, sku FROM item ORDER BY id") == before
    assert database.query("SELECT tenant_id, count(*) FROM item GROUP BY 1") == [("acme", 20)]
    assert database.query("SELECT tenant_id, count(*) FROM line GROUP BY 1") == [("acme", 20)]
    assert database.query("SELECT attnotnull FROM pg_attribute WHERE attrelid = "
                          "'item'::regclass AND attname = 'tenant_id'") == [(True,)]
    assert database.query("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname "
                          "= 'line_item_id_fkey'") == [
        ("FOREIGN KEY (tenant_id, item_id) REFERENCES item(tenant_id, id)",)]
    with database.connect(autocommit=True) as conn:
        user = {"sub": "u", "tenant_id": "acme"}
        assert as_request(conn, "authenticated", user, "SELECT count(*) FROM line") == [(20,)]
        assert as_request(conn, "authenticated", {**user, "tenant_id": "b"},
                          "SELECT count(*) FROM line") == [(0,)]
        # Another tenant may now use a SKU acme has.
        assert as_request(conn, "authenticated", {"sub": "v", "tenant_id": "b"},
                          "INSERT INTO item (sku) VALUES ('S-1') RETURNING tenant_id") == [
            ("b",)]
    # Running the same version again changes nothing.
    again = database.migrate(from_text(_version("acme"), targets=["postgres"]),
                             tmp_path / "v2b")
    assert again.returncode == 0, again.stderr
    assert database.query("SELECT count(*) FROM item") == [(20,)]


def test_evolution_without_a_default_tenant_stops_and_changes_nothing(database, tmp_path):
    assert database.migrate(from_text(_version(None), targets=["postgres"]),
                            tmp_path / "v1").returncode == 0
    database.query("INSERT INTO item (sku) VALUES ('S-1')")
    done = database.migrate(from_text(_version(""), targets=["postgres"]), tmp_path / "v2")
    assert done.returncode != 0
    assert "have no tenant" in done.stderr and "default_tenant" in done.stderr
    assert database.query("SELECT count(*) FROM pg_attribute WHERE attrelid = "
                          "'item'::regclass AND attname = 'tenant_id'") == [(0,)]
    assert database.query("SELECT sku FROM item") == [("S-1",)]


def test_uuid_tenant_column_with_a_malformed_claim_matches_nothing(database, tmp_path):
    """A UUID tenant column is compared with the claim as a uuid (an index can serve it); a
    claim that is no uuid matches no row instead of failing every read."""
    config = """
    entity {
      name: "doc"
      fields { name: "org" type: SQL_TYPE_UUID }
      fields { name: "title" type: SQL_TYPE_TEXT }
      api { access { read: ["authenticated"] create: ["authenticated"]
                     tenant_field: "org" } }
    }"""
    assert database.migrate(from_text(config, targets=["postgres"]),
                            tmp_path).returncode == 0
    org = "11111111-1111-4111-8111-111111111111"
    database.query(f"INSERT INTO doc (org, title) VALUES ('{org}', 't')")
    with database.connect(autocommit=True) as conn:
        for claim, count in ((org, 1), ("not-a-uuid", 0),
                             ("22222222-2222-4222-8222-222222222222", 0)):
            assert as_request(conn, "authenticated", {"sub": "u", "tenant_id": claim},
                              "SELECT count(*) FROM doc") == [(count,)], claim



def test_the_generated_docs_describe_the_tenancy():
    """The generated README says each entity is limited to the caller's tenant and who
    crosses tenants; the OpenAPI document marks the tenant column read-only (left out of
    what callers send)."""
    files = from_textproto(CONFIG, ["readme", "openapi"])
    readme = files["README.md"]
    assert readme.count("Multi-tenant: every role sees and changes only the rows whose "
                        "`tenant_id` equals the token's tenant claim") == 2
    assert readme.count("except platform, which cross tenants") == 2
    schemas = json.loads(files["openapi/openapi.json"])["components"]["schemas"]
    for name in ("Product", "Purchase"):
        assert schemas[name]["properties"]["tenant_id"]["readOnly"] is True
        assert "tenant_id" not in schemas[f"{name}Input"]["properties"]


RULE = """  stream { aggregation { rules {
    name: "product_count" window { type: WINDOW_TYPE_TUMBLING interval: "1 minute" }
    function { type: FUNCTION_TYPE_COUNT } group_by: ["name"]
    output { table_name: "product_counts" } } } }
  default_data { values"""


def test_an_aggregation_over_both_tenants_keeps_them_apart(database, tmp_path):
    """A COUNT per name over product changes of both tenants, in the same window and with
    the same name: the generated pipeline (run in DataFusion by the Arroyo harness) gives one
    row per tenant; upserted by the pipeline role into the output table, each tenant's users
    read only their own tenant's row there."""
    from datetime import datetime, timedelta

    from . import arroyo_harness as harness

    files = from_text(CONFIG.read_text().replace("  default_data { values", RULE, 1),
                      targets=["postgres", "arroyo"])
    sql = files["arroyo-queries/product_product_count.sql"]
    start = datetime(2026, 11, 24, 10, 0, 0)
    events = []
    for i, tenant in enumerate("aabab"):
        t = start + timedelta(seconds=5 * i)
        events.append({"id": f"{i:08d}-0000-4000-8000-000000000000", "tenant_id": tenant,
                       "sku": f"S-{i}", "name": "Anvil", "created_at": t, "updated_at": t,
                       "table_name": "product", "action": "I", "commit_time": t,
                       "commit_lsn": f"0/{i:X}"})
    events.append({"table_name": "product", "action": "T",
                   "commit_time": start + timedelta(minutes=3)})
    group_by = ("tenant_id", "name")
    rows = harness.execute(sql, events, group_by)
    assert sorted((r["tenant_id"], r["name"], r["value"]) for r in rows) == [
        ("a", "Anvil", 3), ("b", "Anvil", 2)]
    assert database.migrate(files, tmp_path).returncode == 0
    with database.connect(autocommit=True) as conn:
        with conn.transaction():
            conn.execute("SET LOCAL ROLE crud_pipeline")
            for r in rows:
                conn.execute("INSERT INTO shop.product_counts (window_start, window_end, "
                             "tenant_id, name, value) VALUES (%s, %s, %s, %s, %s)",
                             (r["window_start"], r["window_end"], r["tenant_id"], r["name"],
                              r["value"]))
        for persona, want in (("alice_a", [("a", 3)]), ("carol_b", [("b", 2)]),
                              ("anon", [])):
            role, claims = PERSONAS[persona]
            assert as_request(conn, role, claims, "SELECT tenant_id, value FROM "
                              "shop.product_counts") == want, persona


def test_change_events_carry_the_tenant_as_a_cloudevent_attribute(database, tmp_path):
    """The relay's CloudEvents of a tenant-scoped entity name the row's tenant in the
    `tenant` extension attribute (insert, update and delete, from real pgoutput of the
    generated publication, with the generated relay.json); `data` stays the last key."""
    from protoc_gen_crud.relay import pgoutput
    from protoc_gen_crud.relay.events import change_data, cloud_event
    from protoc_gen_crud.relay.service import Config

    from .support import write_tree

    files = from_textproto(CONFIG, ["postgres", "relay"])
    assert database.migrate(files, tmp_path).returncode == 0
    config = Config.load(write_tree(files, tmp_path) / "relay" / "relay.json", "", "")
    table = config.tables["shop", "product"]
    assert table.tenant == "tenant_id"
    database.query("SELECT pg_create_logical_replication_slot('tenancy_test', 'pgoutput')")
    try:
        database.query("INSERT INTO shop.product (tenant_id, sku, name) VALUES "
                       "('a', 'A-1', 'Anvil'), ('b', 'A-1', 'Anvil')")
        database.query("UPDATE shop.product SET name = 'Anvil 2' WHERE tenant_id = 'b'")
        database.query("DELETE FROM shop.product WHERE tenant_id = 'a'")
        rows = database.query(
            "SELECT data FROM pg_logical_slot_get_binary_changes('tenancy_test', NULL, NULL, "
            "'proto_version', '1', 'publication_names', 'crud_changes')")
    finally:
        database.query("SELECT pg_drop_replication_slot('tenancy_test')")
    messages = [pgoutput.decode(bytes(data)) for (data,) in rows]
    relation = next(m for m in messages if isinstance(m, pgoutput.Relation)
                    and m.table == "product")
    events = []
    for change in (m for m in messages if isinstance(m, pgoutput.Change)):
        data = change_data(relation, change, table, 0, 0)
        events.append(json.loads(cloud_event("0-0", data, table, "/crud/shop", "p")))
    assert [(e["data"]["action"], e["tenant"]) for e in events] == [
        ("I", "a"), ("I", "b"), ("U", "b"), ("D", "a")]
    assert all(list(e)[-1] == "data" for e in events)
    # An entity without tenants gets no such attribute.
    plain = from_text('entity { name: "note" fields { name: "body" type: SQL_TYPE_TEXT } }',
                      targets=["relay"])
    assert "tenant" not in plain["relay/relay.json"]


def test_an_upsert_with_another_tenants_key_changes_nothing(shop):
    """PUT (PostgREST's insert ... on conflict do update) with the key of tenant b's row, as
    a user and as the admin of tenant a: refused, and b's row is as it was. (That the key
    exists is what the caller learns, as with a POST conflict; options.proto says so.)"""
    other = shop.query("SELECT id::text FROM shop.product WHERE tenant_id = 'b' "
                       "AND sku = 'B-2'")[0][0]
    with shop.connect(autocommit=True) as conn:
        s = postgrest_sql.shape(conn, "shop", "product")
        sql, params = postgrest_sql.upsert(s, {"id": other, "sku": "B-2", "name": "Mine"},
                                           "id")
        for persona in ("alice_a", "admin_a"):
            role, claims = PERSONAS[persona]
            got = as_request(conn, role, claims, _inline(conn, sql, params))
            assert got is errors.InsufficientPrivilege, persona
        role, claims = PERSONAS["carol_b"]  # the row's own tenant may replace it
        (body,), = as_request(conn, role, claims, _inline(conn, sql, params))
        assert [(r["tenant_id"], r["name"]) for r in json.loads(body)] == [("b", "Mine")]
    assert shop.query("SELECT tenant_id, name FROM shop.product WHERE id = %s", (other,)) == [
        ("b", "Bolt")]


def test_evolution_through_the_proto_front_door(database, tmp_path):
    """The same conversion from a .proto through protoc: a message gains a tenant field and
    `tenant_field` with `default_tenant`; its 30 rows converge to that tenant."""
    from .test_evolution import generate

    v1 = """
    message Item {
      option (crud.v1.api) = {access: {read: ["authenticated"] create: ["authenticated"]}};
      string sku = 1 [(crud.v1.field).constraints.unique = true];
    }
    """
    v2 = v1.replace('create: ["authenticated"]', 'create: ["authenticated"] '
                    'tenant_field: "tenant_id" default_tenant: "acme"').replace(
        "string sku = 1", "string tenant_id = 2;\n      string sku = 1")
    v1 = v1.replace("message Item {", 'message Item {\n  option (crud.v1.entity) = {};')
    v2 = v2.replace("message Item {", 'message Item {\n  option (crud.v1.entity) = {};')
    assert database.migrate(generate(tmp_path, "v1", v1), tmp_path / "db").returncode == 0
    database.query("INSERT INTO item (sku) SELECT 'S-' || i FROM generate_series(1, 30) i")
    done = database.migrate(generate(tmp_path, "v2", v2), tmp_path / "db")
    assert done.returncode == 0, done.stderr
    assert database.query("SELECT tenant_id, count(*) FROM item GROUP BY 1") == [("acme", 30)]
    assert database.query("SELECT column_default FROM information_schema.columns WHERE "
                          "table_name = 'item' AND column_name = 'tenant_id'") == [
        ("crud_meta.jwt_claim('tenant_id'::text)",)]


def test_a_unique_tenant_column_is_one_row_per_tenant(database, tmp_path):
    """A per-tenant settings table: the tenant field itself UNIQUE stays UNIQUE (tenant),
    not (tenant, tenant), which PostgreSQL would refuse; each tenant may have one row."""
    config = """
    entity {
      name: "settings"
      fields { name: "org" type: SQL_TYPE_TEXT constraints { unique: true } }
      fields { name: "theme" type: SQL_TYPE_TEXT }
      api { access { read: ["authenticated"] create: ["authenticated"]
                     tenant_field: "org" } }
    }"""
    done = database.migrate(from_text(config, targets=["postgres"]), tmp_path)
    assert done.returncode == 0, done.stderr
    insert = "INSERT INTO settings (theme) VALUES ('dark') RETURNING org"
    with database.connect(autocommit=True) as conn:
        for tenant in ("a", "b"):
            claims = {"sub": "u", "tenant_id": tenant}
            assert as_request(conn, "authenticated", claims, insert) == [(tenant,)]
            with conn.transaction():  # committed, then a second row of the same tenant
                conn.execute("SELECT set_config('request.jwt.claims', %s, true)",
                             (json.dumps(claims),))
                conn.execute('SET LOCAL ROLE "authenticated"')
                conn.execute(insert)
            with pytest.raises(errors.UniqueViolation):
                as_request(conn, "authenticated", claims, insert)


def test_the_python_client_leaves_the_tenant_out_of_its_bodies(tmp_path):
    """The generated client's bodies (create, and PUT/bulk with every field) leave out a
    tenant column left unset, which the database would refuse even at "": the tenant comes
    from the token. A value set on purpose (a platform role's) is sent."""
    from .test_python_client import install, load

    name, site = install(from_textproto(CONFIG, ["python_client"]), tmp_path)
    pkg = load(name, site)
    info = pkg.client.PRODUCT
    unset = pkg.models.Product(sku="A-1", name="Anvil")
    for zeros in (False, True):
        assert "tenant_id" not in pkg.runtime.to_wire(info, unset, zeros=zeros)
    chosen = pkg.models.Product(tenant_id="b", sku="A-1", name="Anvil")
    assert pkg.runtime.to_wire(info, chosen, zeros=True)["tenant_id"] == "b"
    assert pkg.runtime.to_wire(info, unset, zeros=True)["sku"] == "A-1"
