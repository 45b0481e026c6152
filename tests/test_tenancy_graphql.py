"""Multi-tenancy over GraphQL: the `graphql` target inherits the tenant policies with no
code of its own (issue 18). testdata/tenancy served by the generated PostGraphile server
behind the generated gateway, on real PostgreSQL; tokens carry the tenant claim as for the
REST API.
"""

from __future__ import annotations

import pytest

from .support import ROOT
from .test_graphql import JSON, serve, token  # noqa: F401  (serve is a fixture)

CONFIG = (ROOT / "testdata" / "tenancy" / "tenancy.textproto").read_text()
USERS = {
    "alice_a": {"role": "authenticated", "sub": "alice", "tenant_id": "a"},
    "carol_b": {"role": "authenticated", "sub": "carol", "tenant_id": "b"},
    "admin_a": {"role": "admin", "sub": "root", "tenant_id": "a"},
    "platform": {"role": "platform", "sub": "ops"},
}


def run(api, who: str, query: str, variables: dict | None = None) -> dict:
    headers = {**JSON, "Authorization": f"Bearer {token(USERS[who])}"}
    return api.post(query, headers, variables).json()


@pytest.mark.one_major
def test_graphql_stays_within_the_callers_tenant(serve):  # noqa: F811
    api = serve(config=CONFIG)
    create = ("mutation($sku: String!) { createProduct(input: {product: {sku: $sku, "
              "name: $sku}}) { product { id tenantId sku } } }")
    made = {}
    for who, sku in (("alice_a", "A-1"), ("carol_b", "A-1"), ("carol_b", "B-2")):
        got = run(api, who, create, {"sku": sku})
        assert "errors" not in got, got
        row = got["data"]["createProduct"]["product"]
        assert row["tenantId"] == USERS[who]["tenant_id"]  # from the claim
        made[who, sku] = row["id"]
    listing = "{ products(orderBy: SKU_ASC) { nodes { tenantId sku } } }"
    # The same SKU in both tenants; each caller, the tenant's admin included, sees its own.
    for who, rows in (("alice_a", [("a", "A-1")]), ("admin_a", [("a", "A-1")]),
                      ("carol_b", [("b", "A-1"), ("b", "B-2")])):
        got = run(api, who, listing)
        assert [(n["tenantId"], n["sku"]) for n in got["data"]["products"]["nodes"]] == rows
    got = run(api, "platform", listing)  # the platform role crosses tenants (acme: seeds)
    assert sorted((n["tenantId"], n["sku"]) for n in got["data"]["products"]["nodes"]) == [
        ("a", "A-1"), ("acme", "SEED-1"), ("b", "A-1"), ("b", "B-2")]
    # Another tenant's row, even by its key: not found, and unchanged.
    other = made["carol_b", "B-2"]
    got = run(api, "alice_a", "query($id: UUID!) { product(id: $id) { sku } }", {"id": other})
    assert got["data"]["product"] is None
    got = run(api, "admin_a", "mutation($id: UUID!) { updateProduct(input: {id: $id, "
                              "patch: {name: \"x\"}}) { product { id } } }", {"id": other})
    assert (got["data"]["updateProduct"] or {}).get("product") is None, got
    got = run(api, "carol_b", "query($id: UUID!) { product(id: $id) { name } }", {"id": other})
    assert got["data"]["product"] == {"name": "B-2"}
    # The tenant is not the caller's to choose: naming another is refused by the database.
    got = run(api, "alice_a", "mutation { createProduct(input: {product: {sku: \"Z\", "
                              "name: \"Z\", tenantId: \"b\"}}) { product { id } } }")
    assert "errors" in got and not (got.get("data") or {}).get("createProduct"), got
