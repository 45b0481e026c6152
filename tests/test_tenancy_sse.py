"""Multi-tenancy downstream of the database: an SSE subscriber of a tenant-scoped entity gets
only its tenant's events, also after a resume; platform roles get every tenant's.

Live: real PostgreSQL, crud-relay, Redis and the generated gateway on nginx (the permission
check goes to the PostgREST stand-in). The tenant is read from the token once per subscriber
and compared per event in the gateway; the database is not asked per event.
"""

from __future__ import annotations

import psycopg
import pytest

from .support import ROOT, from_text
from .test_realtime import SseClient, token

CONFIG = (ROOT / "testdata" / "tenancy" / "tenancy.textproto").read_text().replace(
    'name: "product"\n', 'name: "product"\n  stream { enable_streaming: true }\n', 1)
USERS = {
    "a": {"role": "authenticated", "sub": "u-a", "tenant_id": "a"},
    "b": {"role": "authenticated", "sub": "u-b", "tenant_id": "b"},
    "admin-a": {"role": "admin", "sub": "x", "tenant_id": "a"},
    "platform": {"role": "platform", "sub": "p"},
}


@pytest.fixture
def shop(make_stack):
    assert CONFIG.count("enable_streaming") == 1
    return make_stack(from_text(CONFIG, "tenancy.textproto"), "tenancy_sse")


def insert(shop, rows: list[tuple[str, str]]) -> None:
    """Rows of product (tenant, sku), written as the migrations' owner (any tenant)."""
    with psycopg.connect(shop.pg.dsn(shop.database), autocommit=True) as conn:
        for tenant, sku in rows:
            conn.execute("INSERT INTO shop.product (tenant_id, sku, name) VALUES (%s, %s, %s)",
                         (tenant, sku, f"name {sku}"))


def subscribe(who: str, last_event_id: str | None = None) -> SseClient:
    headers = {"Authorization": f"Bearer {token(USERS[who])}"}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    return SseClient("/stream/sse/product", headers)


def skus(events) -> list[str]:
    return [data["sku"] for _, data in events]


def test_each_tenant_streams_only_its_own_rows(shop):
    clients = {who: subscribe(who) for who in USERS}
    try:
        for client in clients.values():
            assert client.status == 200
        insert(shop, [("a", "A-1"), ("b", "B-1"), ("a", "A-2"), ("b", "B-2")])
        assert skus(clients["a"].events(3, timeout=3)) == ["A-1", "A-2"]
        assert skus(clients["b"].events(3, timeout=3)) == ["B-1", "B-2"]
        # The tenant's admin role is still within its tenant; the platform role crosses.
        assert skus(clients["admin-a"].events(3, timeout=3)) == ["A-1", "A-2"]
        assert skus(clients["platform"].events(5, timeout=3)) == ["A-1", "B-1", "A-2", "B-2"]
    finally:
        for client in clients.values():
            client.close()


def test_a_resumed_stream_stays_within_its_tenant(shop):
    first = subscribe("a")
    insert(shop, [("a", "A-1")])
    (seen,) = first.events(1, timeout=3)
    first.close()
    insert(shop, [("b", "B-9"), ("a", "A-2"), ("b", "B-10")])
    again = subscribe("a", seen[0])
    try:
        assert skus(again.events(3, timeout=3)) == ["A-2"]
    finally:
        again.close()


def test_a_token_without_a_tenant_is_refused(shop):
    client = SseClient("/stream/sse/product",
                       {"Authorization": f"Bearer {token({'role': 'authenticated'})}"})
    client.close()
    assert client.status == 403
