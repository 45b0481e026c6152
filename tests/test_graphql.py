"""The `graphql` target live: the generated graphql/ folder on Node 22 (PostGraphile v5, the
versions its lock file pins, installed by scripts/setup.sh --system) over the generated
database on real PostgreSQL, reached through the generated gateway on real nginx.

Expected answers come from each example's config (the model's access lists), as in
tests/test_permissions.py, which checks the same matrix at the SQL layer.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import jwt
import psycopg
import pytest
import yaml

from protoc_gen_crud import builder, textproto
from protoc_gen_crud.devloop import DevLoop
from protoc_gen_crud.devstack import GraphqlServer, graphql_runtime
from protoc_gen_crud.targets import compose
from protoc_gen_crud.targets import graphql as graphql_target

from .support import (
    EXAMPLES,
    EXAMPLES_DIR,
    call,
    chromium_argv,
    from_text,
    from_textproto,
    model_of,
    serving_gateway,
    started_dev_loop,
    wait_port,
    write_tree,
)
from .test_gateway import counted, until_limited
from .test_python_client_live import CuttableProxy
from .test_realtime import SseClient

SECRET = "a-graphql-test-secret-of-32-bytes-or-more"
PERSONAS = {
    "anon": None,
    "alice": {"role": "authenticated", "sub": "alice"},
    "bob": {"role": "authenticated", "sub": "bob"},
    "admin": {"role": "admin", "sub": "root"},
}
JSON = {"Content-Type": "application/json"}


def token(claims: dict, secret: str = SECRET, **extra) -> str:
    return jwt.encode({"exp": int(time.time()) + 600, **claims, **extra}, secret,
                      algorithm="HS256")


def headers_of(persona: str) -> dict[str, str]:
    claims = PERSONAS[persona]
    return JSON if claims is None else {**JSON, "Authorization": f"Bearer {token(claims)}"}


class Api:
    """The generated GraphQL server (on its own port) and the gateway in front of it."""

    def __init__(self, netns, server: GraphqlServer, route: str):
        self.netns, self.server, self.route = netns, server, route

    def post(self, query: str, headers: dict[str, str], variables: dict | None = None):
        body = json.dumps({"query": query, "variables": variables or {}})
        return call(self.netns, "POST", self.route, headers=headers, body=body)

    def run(self, persona: str, query: str, variables: dict | None = None) -> dict:
        reply = self.post(query, headers_of(persona), variables)
        assert reply.headers["content-type"].startswith("application/"), reply.headers
        return reply.json()

    def fields(self, persona: str) -> dict[str, set[tuple[str, str]]]:
        """(field, type) pairs of Query and Mutation in this persona's schema."""
        got = self.run(persona, "{ __schema { queryType { fields { name type { name ofType "
                                "{ name } } } } mutationType { fields { name } } } }")
        assert "data" in got, (persona, got)
        schema = got["data"]["__schema"]
        query = {(f["name"], f["type"]["name"] or (f["type"]["ofType"] or {}).get("name"))
                 for f in schema["queryType"]["fields"]}
        mutation = {(f["name"], "") for f in (schema["mutationType"] or {"fields": []})["fields"]}
        return {"query": query, "mutation": mutation}


def start_graphql(netns, out: Path, database, env: dict[str, str] | None = None,
                  port: int | None = None) -> GraphqlServer:
    """The generated graphql/ on Node 22, logged in as the authenticator, like PostgREST
    (to the database's port, or to `port` when a relay stands in between)."""
    if graphql_runtime() is None:
        pytest.fail("Node 22 or PostGraphile is not installed: run scripts/setup.sh --system")
    url = f"postgres://authenticator@127.0.0.1:{port or database.server.port}/{database.name}"
    return GraphqlServer(netns, out / "graphql", url,
                         env if env is not None else {"PGRST_JWT_SECRET": SECRET}).start()


@pytest.fixture
def serve(test_host, database, tmp_path):
    """serve(example) or serve(config=textproto, env=...) -> Api: migrates the backend into
    the test's database, starts the GraphQL server and the gateway; everything is stopped
    after the test."""
    started: list = []

    def make(name: str = "", config: str = "", env: dict[str, str] | None = None,
             port: int | None = None) -> Api:
        if config:
            files = from_text(config)
            backend = builder.build(*textproto.load(config, "test.textproto"))
        else:
            files, backend = example_files(name), model_of(name)
        done = database.migrate(files, tmp_path / "out",
                                env={"PGRST_AUTHENTICATOR_PASSWORD": "x",
                                     "CRUD_RELAY_PASSWORD": "x"})
        assert done.returncode == 0, done.stderr
        server = start_graphql(test_host, tmp_path / "out", database, env, port)
        started.append(server.stop)
        gateway = serving_gateway(test_host, tmp_path / "out" / "openresty")
        gateway.__enter__()
        started.append(lambda: gateway.__exit__(None, None, None))
        return Api(test_host, server, graphql_target.routes(backend)[0])

    yield make
    for stop in reversed(started):
        stop()


def example_files(name: str) -> dict[str, str]:
    return from_textproto(EXAMPLES_DIR / name / f"{name}.textproto")


def type_name(table: str, types: set[str]) -> str:
    """PostGraphile's row type of a table: its name in PascalCase, singular."""
    pascal = "".join(part.capitalize() for part in table.split("_"))
    for candidate in (pascal, pascal.removesuffix("s")):
        if candidate in types:
            return candidate
    raise AssertionError(f"no GraphQL type for {table} among {sorted(types)}")


@pytest.mark.one_major
@pytest.mark.parametrize("name", EXAMPLES)
def test_permission_matrix_over_graphql(name, serve):
    """Anon, two users and an admin, every operation on every entity: allowed exactly when
    the config allows it. Reads run; what a role may not do is not in its schema at all."""
    backend = model_of(name)
    api = serve(name)
    roles = set(backend.api_roles)
    personas = {p: c for p, c in PERSONAS.items()
                if (backend.auth.anon_role if c is None else c["role"]) in roles}
    schemas = {p: api.fields(p) for p in personas}
    types = {t for s in schemas.values() for _, t in s["query"] if t}
    checked = 0
    for persona, claims in personas.items():
        role = backend.auth.anon_role if claims is None else claims["role"]
        schema = schemas[persona]
        for entity in backend.entities:
            row_type = type_name(entity.name, types | {t.removesuffix("Connection")
                                                       for t in types})
            lists = [f for f, t in schema["query"] if t == f"{row_type}Connection"]
            mutations = {f for f, _ in schema["mutation"]}
            for operation in ("read", "create", "update", "delete"):
                allowed = (role in getattr(entity.access, operation)
                           or role in entity.access.admin_roles)
                if operation == "read":
                    assert bool(lists) == allowed, (persona, entity.name, schema["query"])
                    if allowed:
                        got = api.run(persona, f"{{ {lists[0]} {{ totalCount }} }}")
                        assert "errors" not in got, got
                        assert got["data"][lists[0]]["totalCount"] >= 0
                else:
                    field = f"{operation}{row_type}"
                    assert (field in mutations) == allowed, (persona, entity.name, field)
                checked += 1
    assert checked >= 4 * len(backend.entities) * 2


def test_owners_see_only_their_rows(serve, database):
    """storefront's customers: row-level security by user_id, admins exempt; the owner
    column defaults to the caller; a database error keeps its SQLSTATE."""
    api = serve("storefront")
    create = ("mutation($email: String!) { createCustomer(input: {customer: "
              "{email: $email, name: \"N\"}}) { customer { id email userId } } }")
    made = {}
    for persona in ("alice", "bob"):
        got = api.run(persona, create, {"email": f"{persona}@x.io"})
        assert "errors" not in got, got
        row = got["data"]["createCustomer"]["customer"]
        assert row["userId"] == persona
        made[persona] = row["id"]
    listing = "{ customers(orderBy: EMAIL_ASC) { nodes { id email } } }"
    for persona, emails in (("alice", ["alice@x.io"]), ("bob", ["bob@x.io"]),
                            ("admin", ["alice@x.io", "bob@x.io"])):
        got = api.run(persona, listing)
        assert [n["email"] for n in got["data"]["customers"]["nodes"]] == emails, persona
    # Bob cannot read or change Alice's row, even by its key.
    got = api.run("bob", "query($id: UUID!) { customer(id: $id) { email } }",
                  {"id": made["alice"]})
    assert got["data"]["customer"] is None
    got = api.run("bob", "mutation($id: UUID!) { updateCustomer(input: {id: $id, "
                         "patch: {name: \"x\"}}) { customer { id } } }",
                  {"id": made["alice"]})
    assert (got["data"]["updateCustomer"] or {}).get("customer") is None, got
    assert database.query("SELECT name FROM shop.customer WHERE user_id = 'alice'") == [("N",)]
    # Nor create a row in Alice's name: the policy's check is a database error, shown.
    got = api.run("bob", "mutation { createCustomer(input: {customer: {email: \"e@x.io\", "
                         "name: \"Eve\", userId: \"alice\"}}) { customer { id } } }")
    assert got["errors"][0]["extensions"]["code"] == "42501", got
    # A CHECK constraint: SQLSTATE and message as PostgreSQL gives them.
    got = api.run("alice", "mutation { createCustomer(input: {customer: {email: \"no-at\", "
                           "name: \"A\"}}) { customer { id } } }")
    assert got["errors"][0]["extensions"]["code"] == "23514", got
    assert "customer" in got["errors"][0]["message"]
    # `id` is the primary key's own name (no Relay global id), usable as an argument.
    got = api.run("admin", "query($id: UUID!) { customer(id: $id) { id email } }",
                  {"id": made["bob"]})
    assert got["data"]["customer"] == {"id": made["bob"], "email": "bob@x.io"}


def test_tokens_are_checked_like_postgrest(serve, test_host):
    api = serve("storefront")
    query = json.dumps({"query": "{ products { totalCount } }"})
    now = int(time.time())
    bad = {
        "wrong secret": token(PERSONAS["alice"], secret="another-secret-of-32-bytes-or-more!!"),
        "expired": jwt.encode({**PERSONAS["alice"], "exp": now - 120}, SECRET,
                              algorithm="HS256"),
        "not yet valid": jwt.encode({**PERSONAS["alice"], "nbf": now + 600}, SECRET,
                                    algorithm="HS256"),
        "garbage": "not.a.token",
        "unsigned": jwt.encode(PERSONAS["alice"], None, algorithm="none"),
    }
    for what, value in bad.items():
        reply = call(test_host, "POST", api.route, body=query,
                     headers={**JSON, "Authorization": f"Bearer {value}"})
        assert reply.status == 401, (what, reply.status, reply.body)
        assert reply.headers["content-type"].startswith("application/json")
        assert reply.json()["errors"][0]["extensions"]["code"] == "PGRST301", what
        assert "invalid_token" in reply.headers["www-authenticate"]
        assert "x-request-id" in reply.headers  # through the gateway
    # A role the authenticator cannot switch to is an error, never a fallback.
    reply = call(test_host, "POST", api.route, body=query,
                 headers={**JSON, "Authorization":
                          f"Bearer {token({'role': 'superuser', 'sub': 'x'})}"})
    assert reply.status == 400 and "superuser" in reply.json()["errors"][0]["message"]
    # Without a role claim a user runs as authenticated; a token with neither, as anon.
    for claims, can_order in (({"sub": "carol"}, True), ({}, False)):
        got = api.post("{ __schema { queryType { fields { name } } } }",
                       {**JSON, "Authorization": f"Bearer {token(claims)}"}).json()
        names = {f["name"] for f in got["data"]["__schema"]["queryType"]["fields"]}
        assert ("orderItems" in names) == can_order, (claims, sorted(names))


def test_anon_schema_lacks_what_anon_may_not_do(serve):
    api = serve("storefront")
    anon = api.fields("anon")
    admin = api.fields("admin")
    anon_query = {f for f, _ in anon["query"]}
    assert {"products", "product", "productsTrending"} <= anon_query
    assert not anon_query & {"customers", "customer", "orderItems", "orderItem"}
    assert anon["mutation"] == set()  # anon may change nothing, not even call restock
    assert {"createProduct", "updateProduct", "deleteProduct", "productsRestock"} <= {
        f for f, _ in admin["mutation"]}
    got = api.run("anon", "mutation { createProduct(input: {product: {sku: \"x\"}}) "
                          "{ product { id } } }")
    assert "errors" in got and not (got.get("data") or {}).get("createProduct")


def test_custom_endpoints_return_what_their_sql_returns(serve, database):
    api = serve("storefront")
    got = api.run("admin", "mutation { createProduct(input: {product: {sku: \"L-1\", "
                           "name: \"Lamp\", price: \"10.50\", cost: \"4\"}}) "
                           "{ product { id stock } } }")
    assert "errors" not in got, got
    product = got["data"]["createProduct"]["product"]
    got = api.run("admin", "mutation { productsRestock(input: {sku: \"L-1\", amount: 5}) "
                           "{ result { sku stock } } }")
    assert "errors" not in got, got
    rows = database.query("SELECT sku, stock FROM shop.product WHERE sku = 'L-1'")
    assert got["data"]["productsRestock"]["result"] == [
        {"sku": sku, "stock": stock} for sku, stock in rows]
    assert rows == [("L-1", product["stock"] + 5)]
    # A STABLE endpoint is a query field; its rows are the function's rows.
    database.query("INSERT INTO shop.order_items (product_id, quantity, price) VALUES "
                   "(%s, 2, 10.5), (%s, 1, 10.5)", (product["id"], product["id"]))
    got = api.run("anon", "{ productsTrending { nodes { sku orderCount } } }")
    assert "errors" not in got, got
    expected = database.query("SELECT sku, order_count FROM shop.products_trending()")
    assert [(n["sku"], int(n["orderCount"])) for n in got["data"]["productsTrending"]["nodes"]
            ] == [(s, int(c)) for s, c in expected] == [("L-1", 2)]


def test_gateway_applies_its_limits_and_json_errors(serve, test_host):
    api = serve("storefront")
    reply = call(test_host, "DELETE", api.route)
    assert reply.status == 405 and reply.json()["code"] == "method_not_allowed"
    big = json.dumps({"query": "{ products { totalCount } }", "pad": "x" * 70_000})
    reply = call(test_host, "POST", api.route, body=big, headers=JSON)
    assert reply.status == 413 and reply.json()["code"] == "payload_too_large"
    reply = call(test_host, "OPTIONS", api.route,
                 headers={"Origin": "https://shop.example",
                          "Access-Control-Request-Method": "POST"})
    assert reply.status == 204
    assert reply.headers["access-control-allow-origin"] == "https://shop.example"
    reply = call(test_host, "POST", api.route, body=json.dumps({"query": "{ products "
                 "{ totalCount } }"}), headers={**JSON, "Origin": "https://shop.example"})
    assert reply.status == 200 and reply.headers["x-request-id"]
    assert reply.headers["access-control-allow-origin"] == "https://shop.example"
    # Counted for Prometheus under its own route, like the REST routes.
    assert counted(test_host, 'crud_gateway_requests_total{route="graphql",status="200"}') >= 1
    # Ruru (GraphiQL) is off outside development, its files too.
    reply = call(test_host, "GET", api.route, headers={"Accept": "text/html"})
    assert b"ruru" not in reply.body.lower()
    reply = call(test_host, "GET", f"{api.route}/ruru-static/ruru.min.js")
    assert reply.status == 404
    # The GraphQL server down: the gateway's JSON error, as for the REST routes (nginx keeps
    # the upstream's 502 with the @crud_upstream_unavailable body).
    api.server.stop()
    reply = call(test_host, "POST", api.route, body="{}", headers=JSON)
    assert reply.status == 502 and reply.json()["code"] == "unavailable", (reply.status, reply.body)


def test_the_graphql_route_is_rate_limited_like_the_rest_routes(serve, test_host):
    """Past the burst the gateway answers 429 itself, with its JSON error, Retry-After and a
    request id, as on the REST routes (tests/test_gateway.py), and counts it under the
    route."""
    api = serve("storefront")
    rate = model_of("storefront").rate_limit
    query = json.dumps({"query": "{ products { totalCount } }"})
    passed, reply = until_limited(test_host, api.route, JSON, method="POST", body=query)
    assert passed >= rate.burst  # a fresh gateway: the whole burst first
    assert reply.status == 429
    assert reply.headers["content-type"].startswith("application/json")
    assert reply.json()["code"] == "rate_limited", reply.body
    assert reply.headers["retry-after"] == "1"
    assert reply.headers["x-request-id"]
    assert counted(test_host, 'crud_gateway_requests_total{route="graphql",status="429"}') >= 1


def test_errors_other_than_the_databases_are_masked(serve, test_host, database):
    """The GraphQL server's connection to PostgreSQL cut (a relay in between, shut): the
    caller gets a generic message with an id, not the driver's text, which the server logs
    under that id. Once it is back, a database error again shows its SQLSTATE and message."""
    with test_host.inside():  # the relay's sockets and threads live in the namespace
        relay = CuttableProxy(target=database.server.port)
    try:
        api = serve("storefront", port=relay.port)
        listing = "{ products { totalCount } }"
        assert "errors" not in api.run("anon", listing)
        relay.cut()
        reply = api.post(listing, headers_of("anon"))
        assert reply.headers["x-request-id"]  # through the gateway
        error = reply.json()["errors"][0]
        found = re.fullmatch(r"An error occurred \(logged with hash: '[\w-]+', id: '(\w+)'\)",
                             error["message"])
        assert found, error
        assert set(error.get("extensions", {})) <= {"errorId"}, error
        assert "onnect" not in json.dumps(reply.json()), reply.body  # no driver text
        deadline = time.monotonic() + 5
        while found[1] not in api.server.output() and time.monotonic() < deadline:
            time.sleep(0.05)
        logged = api.server.output()
        assert found[1] in logged
        assert re.search(r"onnect|ECONN", logged[logged.index(found[1]):]), logged[-2000:]
        relay.resume()
        got = api.run("admin", "mutation { createProduct(input: {product: {sku: \"M-1\", "
                               "name: \"M\", price: \"-1\", cost: \"0\"}}) { product { id } } }")
        assert got["errors"][0]["extensions"]["code"] == "23514", got
        assert "product" in got["errors"][0]["message"], got
    finally:
        relay.close()


def test_the_gateway_keeps_its_connections_to_the_graphql_server(serve, test_host):
    """nginx keeps idle upstream connections for 60 s; the GraphQL server keeps them open
    longer than Node's default 5 s, so nginx never sends a request on one being closed."""
    api = serve("storefront")
    assert "errors" not in api.run("anon", "{ products { totalCount } }")
    time.sleep(6)  # idle past Node's default keep-alive timeout
    held = test_host.run("ss", "-Htn", "state", "established",
                         f"( sport = :{GraphqlServer.PORT} )")
    assert held.returncode == 0, held.stderr
    assert held.stdout.strip(), "the GraphQL server closed the gateway's idle connection"


def test_generated_files_are_plain_and_pinned():
    files = example_files("storefront")
    package = json.loads(files["graphql/package.json"])
    lock = json.loads(files["graphql/package-lock.json"])
    for name, version in package["dependencies"].items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), (name, version)
        assert lock["packages"][f"node_modules/{name}"]["version"] == version
    assert package["engines"]["node"] == ">=22"


def test_make_dev_serves_graphql_and_its_changes_reach_sse(test_host, pg, redis_server,
                                                           recording, tmp_path):
    """`make dev` (DevLoop) starts the GraphQL API beside the gateway: a newcomer's create and
    list work through <base_path>/graphql, the insert reaches an SSE subscriber through the
    relay like any other change, and an edit of the .proto restarts it with the new column.
    (The SSE read check goes to the PostgREST stand-in, `recording`.)"""
    loop = started_dev_loop("product.proto", tmp_path, test_host, pg, redis_server,
                            "dev_graphql")
    source = loop.source
    try:
        assert loop.graphql is not None, "make dev did not start the GraphQL API"
        user = {**JSON, "Authorization": "Bearer " + jwt.encode(
            {"sub": "dev", "role": "authenticated", "exp": int(time.time()) + 600},
            "d" * 32, algorithm="HS256")}
        client = SseClient("/stream/sse/product")
        assert client.status == 200
        create = json.dumps({"query": 'mutation { createProduct(input: {product: {name: "Lamp", '
                                      'price: "10.50"}}) { product { id name price } } }'})
        reply = call(test_host, "POST", "/api/v1/graphql", headers=user, body=create)
        assert reply.status == 200, reply.body
        made = reply.json()["data"]["createProduct"]["product"]
        assert made["name"] == "Lamp"
        reply = call(test_host, "POST", "/api/v1/graphql", headers=user,
                     body=json.dumps({"query": "{ products { nodes { id name } } }"}))
        assert reply.json()["data"]["products"]["nodes"] == [{"id": made["id"], "name": "Lamp"}]
        (event,) = client.events(1, timeout=10)
        client.close()
        assert event[1]["action"] == "I" and event[1]["id"] == made["id"]
        assert event[1]["name"] == "Lamp"
        # Ruru, in development only.
        page = call(test_host, "GET", "/api/v1/graphql", headers={"Accept": "text/html"})
        assert page.status == 200 and b"ruru" in page.body.lower()
        # It posts to the gateway's route and loads its files through the gateway, from
        # nowhere else.
        html = page.body.decode()
        assert '"endpoint":"/api/v1/graphql"' in html.replace(" ", ""), html[:2000]
        files = set(re.findall(r'(?:src|href)="([^"]+)"', html))
        assert files and all(f.startswith("/api/v1/graphql/ruru-static/") for f in files), files
        for path in files:
            assert call(test_host, "GET", path).status == 200, path

        text = source.read_text()
        last_brace = text.rstrip().rfind("}")
        number = 1 + max(int(n) for n in re.findall(r"= (\d+)[;\s\[]", text))
        source.write_text(text[:last_brace] + f"  optional string colour = {number};\n}}\n")
        os.utime(source, (time.time() + 5, time.time() + 5))
        change = loop.poll()
        assert change is not None and change.migrations
        reply = call(test_host, "POST", "/api/v1/graphql", headers=user,
                     body=json.dumps({"query": "{ products { nodes { name colour } } }"}))
        assert reply.json()["data"]["products"]["nodes"] == [{"name": "Lamp", "colour": None}]
    finally:
        loop.stop()


def test_audit_columns_are_read_only(serve):
    """created_at/updated_at (kept by the audit trigger) can be read but are in no create
    or update input; the entity's own columns are."""
    api = serve("storefront")
    got = api.run("admin", '{ i: __type(name: "ProductInput") { inputFields { name } } '
                           'p: __type(name: "ProductPatch") { inputFields { name } } '
                           'r: __type(name: "Product") { fields { name } } }')
    for key in ("i", "p"):
        names = {f["name"] for f in got["data"][key]["inputFields"]}
        assert {"sku", "name", "price"} <= names and not names & {"createdAt", "updatedAt"}
    assert {"createdAt", "updatedAt"} <= {f["name"] for f in got["data"]["r"]["fields"]}


OAUTH2 = """
database { name: "notes" schema: "notes" }
api { auth { type: AUTH_TYPE_OAUTH2 jwks_url: "https://idp.example/jwks"
             audience: "https://api.notes.example" role_claim: ".app.db_role" } }
entity {
  name: "note"
  fields { name: "body" type: SQL_TYPE_TEXT }
  api { entity_path: "/notes" access { read: ["anon", "authenticated", "editor"]
        create: ["authenticated", "editor"] update: ["editor"] delete: ["editor"] } }
}
entity {
  name: "draft"
  fields { name: "body" type: SQL_TYPE_TEXT }
  api { entity_path: "/drafts" access { read: ["editor"] create: ["editor"]
        update: ["editor"] delete: ["editor"] } }
}
"""


def test_oauth2_key_set_audience_and_a_nested_role_claim(serve, test_host, tmp_path):
    """AUTH_TYPE_OAUTH2 as PostgREST is configured for it: the provider's keys from the key
    set file the `jwks` one-shot writes (with the service secret as an oct key), `aud`
    required, the role at the claim path `.app.db_role`."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    service = "a-service-secret-of-at-least-32-bytes!"
    oct_key = {"kty": "oct", "kid": "crud-service", "alg": "HS256",
               "k": jwt.utils.base64url_encode(service.encode()).decode()}
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**public, "kid": "rsa-1", "alg": "RS256",
                                          "use": "sig"}, oct_key]}))
    api = serve(config=OAUTH2, env={"CRUD_GRAPHQL_JWKS_PATH": str(jwks)})
    audience = "https://api.notes.example"
    now = int(time.time())

    def provider(claims: dict) -> dict[str, str]:
        signed = jwt.encode({"exp": now + 600, **claims}, key, algorithm="RS256",
                            headers={"kid": "rsa-1"})
        return {**JSON, "Authorization": f"Bearer {signed}"}

    def names(headers: dict[str, str]) -> set[str]:
        reply = api.post("{ __schema { queryType { fields { name } } } }", headers)
        assert reply.status == 200, reply.body
        return {f["name"] for f in reply.json()["data"]["__schema"]["queryType"]["fields"]}

    editor = provider({"sub": "ed", "aud": audience, "app": {"db_role": "editor"}})
    assert {"notes", "drafts"} <= names(editor)
    user = provider({"sub": "u", "aud": [audience, "other"]})
    assert "notes" in names(user) and "drafts" not in names(user)
    # The claim naming anon keeps a user anon (role_claim is not `role`): no create.
    reply = api.post("mutation { createNote(input: {note: {body: \"x\"}}) { note { id } } }",
                     provider({"sub": "u", "aud": audience, "app": {"db_role": "anon"}}))
    assert reply.json()["errors"][0]["message"] == "No mutation type found in schema", reply.body
    reply = api.post("mutation { createNote(input: {note: {body: \"x\"}}) { note { body } } }",
                     user)
    assert reply.json()["data"]["createNote"]["note"] == {"body": "x"}
    # A service token, HS256 with the secret served as the oct key.
    service_token = jwt.encode({"exp": now + 600, "aud": audience, "app": {"db_role": "editor"}},
                               service, algorithm="HS256", headers={"kid": "crud-service"})
    assert "drafts" in names({**JSON, "Authorization": f"Bearer {service_token}"})
    for bad in (provider({"sub": "u"}),  # no aud
                provider({"sub": "u", "aud": "https://elsewhere.example"}),
                {**JSON, "Authorization": "Bearer " + jwt.encode(
                    {"sub": "u", "aud": audience, "exp": now + 600},
                    rsa.generate_private_key(public_exponent=65537, key_size=2048),
                    algorithm="RS256", headers={"kid": "rsa-1"})}):
        reply = api.post("{ notes { totalCount } }", bad)
        assert reply.status == 401, reply.body
        assert reply.json()["errors"][0]["extensions"]["code"] == "PGRST301"
    assert "notes" in names(JSON)  # no token: anon, who may read notes


def test_ruru_from_make_dev_runs_a_query_in_chromium(test_host, pg, redis_server, recording,
                                                     tmp_path):
    """Headless Chromium (Debian's, in the test namespace, no route out) opens the query page
    of `make dev` through the gateway, runs a query with the page's own button, and shows
    the rows; every request the page made went to the gateway."""
    source = tmp_path / "src" / "product.textproto"
    source.parent.mkdir()
    shutil.copy(EXAMPLES_DIR / "product" / "product.textproto", source)
    source.write_text(source.read_text().replace('entity_path: "/products"',
                                                 'entity_path: "/products"\n  access { read: '
                                                 '["anon", "authenticated"] }', 1))
    loop = DevLoop(source, tmp_path / "generated", test_host, pg, redis_server, "dev_ruru")
    loop.start()
    browser = None
    try:
        assert loop.graphql is not None
        with psycopg.connect(pg.dsn("dev_ruru"), autocommit=True) as conn:
            conn.execute("INSERT INTO product (name, price) VALUES ('Ruru lamp', 3)")
        node, _ = graphql_runtime()
        port = 9333
        browser = test_host.popen(*chromium_argv(tmp_path / "profile",
                                                 f"--remote-debugging-port={port}",
                                                 "--window-size=1280,900", "about:blank"),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(test_host, port, timeout=30)
        shots = Path(os.environ.get("CRUD_SCREENSHOT_DIR") or tmp_path)
        shots.mkdir(parents=True, exist_ok=True)
        shot = shots / "graphql-ruru.png"
        done = test_host.run(str(node), str(Path(__file__).parent / "graphql_page.mjs"),
                             str(port), "http://127.0.0.1/api/v1/graphql",
                             "{ products { nodes { name price } } }", str(shot), timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        seen = json.loads(done.stdout.strip().splitlines()[-1])
        shown = json.loads(seen["result"].replace("\xa0", " ").split("\n}\n")[0] + "\n}")
        assert shown == {"data": {"products": {"nodes": [{"name": "Ruru lamp",
                                                          "price": "3"}]}}}, seen["result"]
        # Inline data: URLs (the editor's fonts and workers) aside, everything went to the
        # gateway (the page, its files below the route, the query; the browser's favicon).
        fetched = [u for u in seen["requests"] if not u.startswith(("data:", "blob:"))]
        assert fetched and [u for u in fetched if not u.startswith("http://127.0.0.1/")] == []
        assert any(u.startswith("http://127.0.0.1/api/v1/graphql/ruru-static/")
                   for u in fetched)
        assert "http://127.0.0.1/api/v1/graphql" in fetched
        picture = shot.read_bytes()
        assert picture[:8] == b"\x89PNG\r\n\x1a\n" and len(picture) > 20_000
    finally:
        if browser is not None:
            browser.terminate()
            browser.wait(10)
        loop.stop()


def test_the_compose_service_installs_the_lock_once_and_serves(test_host, database, tmp_path):
    """compose's `graphql` service command itself, run by sh on the generated graphql/
    folder (its paths moved into tmp_path; npm offline, from the cache setup.sh's install
    filled; Node 22 first on the PATH as in the image): it installs the pinned packages, starts
    the server, which answers /health and a query; a second start installs nothing."""
    files = example_files("storefront")
    out = write_tree(files, tmp_path / "out")
    assert database.migrate(files, tmp_path / "out").returncode == 0
    service = yaml.safe_load(files["compose.yml"])["services"]["graphql"]
    assert service["image"].startswith("node:22.") and service["depends_on"] == {
        "database": {"condition": "service_healthy"},
        "migrate": {"condition": "service_healthy"}}
    volume = tmp_path / "volume"
    volume.mkdir()
    script = service["command"][2].replace("/src", str(out / "graphql")).replace(
        compose.GRAPHQL_DIR, str(volume))
    node, _ = graphql_runtime()
    env = {**os.environ, **{k: v for k, v in service["environment"].items()
                            if not v.startswith("${") and "${" not in v},
           "PATH": f"{node.parent}:{os.environ['PATH']}", "npm_config_offline": "true",
           "npm_config_update_notifier": "false", "PGRST_JWT_SECRET": SECRET,
           "CRUD_GRAPHQL_DATABASE_URL": f"postgres://authenticator@127.0.0.1:"
                                        f"{database.server.port}/{database.name}"}
    for start in ("first", "second"):
        log = tmp_path / f"{start}.log"
        process = subprocess.Popen(["sh", "-c", script], env=env, stdout=open(log, "w"),  # noqa: SIM115
                                   stderr=subprocess.STDOUT)
        try:
            wait_port(test_host, graphql_target.PORT, timeout=240)
            assert call(test_host, "GET", "/health", port=graphql_target.PORT).json() == {
                "status": "ok"}
            reply = call(test_host, "POST", "/api/v1/graphql", port=graphql_target.PORT,
                         headers=JSON, body=json.dumps({"query": "{ products { totalCount } }"}))
            (count,) = database.query("SELECT count(*) FROM shop.product")[0]
            assert reply.json() == {"data": {"products": {"totalCount": count}}}, reply.body
        finally:
            process.terminate()
            process.wait(20)
        wait_port(test_host, graphql_target.PORT, up=False)
        installed = "added" in log.read_text()
        assert installed == (start == "first"), log.read_text()
    pinned = json.loads(files["graphql/package.json"])["dependencies"]["postgraphile"]
    assert json.loads((volume / "node_modules" / "postgraphile" / "package.json").read_text()
                      )["version"] == pinned


def test_filter_and_order_on_columns_without_an_index(serve, database):
    """`filter:` and `orderBy` exist for every column, not only indexed ones (product.cost
    and product.stock have no index); their rows are what the same SQL returns."""
    api = serve("storefront")
    indexed = {c for e in model_of("storefront").entities if e.name == "product"
               for i in e.indexes for c in i.columns}
    assert "cost" not in indexed and "stock" not in indexed
    got = api.run("anon", '{ products(filter: {cost: {greaterThan: "1"}}, '
                          'orderBy: [STOCK_DESC, SKU_ASC]) { nodes { sku } } }')
    assert "errors" not in got, got
    expected = database.query("SELECT sku FROM shop.product WHERE cost > 1 "
                              "ORDER BY stock DESC, sku")
    assert [n["sku"] for n in got["data"]["products"]["nodes"]] == [s for (s,) in expected]
    assert expected  # the seed has such rows


def test_development_server_takes_a_migration_without_restart(serve, database, tmp_path):
    """With CRUD_GRAPHQL_DEV=1 (make dev, the compose override) the server builds its
    schemas again on the notification the migrations end with: a column a later migration
    adds can be queried from the same process."""
    source = (EXAMPLES_DIR / "product" / "product.textproto").read_text()
    api = serve(config=source, env={"PGRST_JWT_SECRET": SECRET, "CRUD_GRAPHQL_DEV": "1"})
    pid = api.server.process.pid
    query = "{ products { nodes { name colour } } }"
    first = api.run("alice", query)
    assert "colour" in first["errors"][0]["message"], first

    field = '  fields {\n    name: "colour"\n    type: SQL_TYPE_TEXT\n  }\n'
    changed = source.replace("  indexes {", field + "  indexes {", 1)
    assert changed != source
    done = database.migrate(from_text(changed), tmp_path / "again",
                            env={"PGRST_AUTHENTICATOR_PASSWORD": "x", "CRUD_RELAY_PASSWORD": "x"})
    assert done.returncode == 0, done.stderr
    database.query("INSERT INTO product (name, price, colour) VALUES ('Pen', 2, 'blue')")
    deadline = time.monotonic() + 60
    while "errors" in (got := api.run("alice", query)):
        assert time.monotonic() < deadline, (got, api.server.output())
        time.sleep(0.2)
    assert {"name": "Pen", "colour": "blue"} in got["data"]["products"]["nodes"]
    assert api.server.process.pid == pid and api.server.process.poll() is None
    assert "graphql schema reloaded" in api.server.output()
