"""Multi-tenancy downstream of the database: an SSE subscriber of a tenant-scoped entity gets
only its tenant's events, also after a resume; platform roles get every tenant's.

Live: real PostgreSQL, crud-relay, Redis and the generated gateway on nginx (the permission
check goes to the PostgREST stand-in). The tenant is read from the token once per subscriber
and compared per event in the gateway; the database is not asked per event.
"""

from __future__ import annotations

import json

import psycopg
import pytest

from .support import ROOT, call, from_text
from .test_realtime import SseClient, token
from .test_sse_multi import MultiClient

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


def as_user(who: str, last_event_id: str | None = None) -> dict[str, str]:
    """A stream request's headers: the user's token, and where to resume if given."""
    headers = {"Authorization": f"Bearer {token(USERS[who])}"}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    return headers


def subscribe(who: str, last_event_id: str | None = None) -> SseClient:
    return SseClient("/stream/sse/product", as_user(who, last_event_id))


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


CHANNEL_CONFIG = CONFIG.replace("stream { enable_streaming: true }", """stream {
    enable_streaming: true
    aggregation { rules {
      name: "product_count" window { type: WINDOW_TYPE_TUMBLING interval: "1 minute" }
      function { type: FUNCTION_TYPE_COUNT } group_by: ["name"]
      output { table_name: "product_counts" sse_channel: "/stream/product-counts" } } }
  }""", 1)


def test_an_aggregation_channel_streams_each_tenant_its_own_results(make_stack):
    """Results of a tenant-scoped entity's rule carry the tenant (the pipeline groups by
    it); its SSE channel gives each subscriber only its own tenant's results, the platform
    role all of them, and a resume stays within the tenant."""
    assert CHANNEL_CONFIG.count("sse_channel") == 1
    stack = make_stack(from_text(CHANNEL_CONFIG, "tenancy.textproto"), "tenancy_channel")
    path = "/stream/product-counts"

    def listen(who: str, last: str | None = None) -> SseClient:
        return SseClient(path, as_user(who, last))

    def publish(tenant: str, value: int) -> None:
        result = {"window_start": "2026-11-24T10:00:00Z", "window_end": "2026-11-24T10:01:00Z",
                  "tenant_id": tenant, "name": "Anvil", "value": value}
        done = call(stack.host, "POST", "/publish/product-counts", body=json.dumps(result),
                    port=9145, headers={"Content-Type": "application/json"})
        assert done.status == 201, done.text

    clients = {who: listen(who) for who in ("a", "b", "platform")}
    try:
        assert all(client.status == 200 for client in clients.values())
        for tenant, value in (("a", 1), ("b", 2), ("a", 3)):
            publish(tenant, value)
        seen = {who: client.events(4, timeout=2) for who, client in clients.items()}
    finally:
        for client in clients.values():
            client.close()
    values = {who: [(data["tenant_id"], data["value"]) for _, data in events]
              for who, events in seen.items()}
    assert values == {"a": [("a", 1), ("a", 3)], "b": [("b", 2)],
                      "platform": [("a", 1), ("b", 2), ("a", 3)]}
    # Resumed after its first result, tenant a gets its second one and none of b's.
    publish("b", 4)
    again = listen("a", seen["a"][0][0])
    try:
        assert [data["value"] for _, data in again.events(3, timeout=2)] == [3]
    finally:
        again.close()


MULTI_CONFIG = CONFIG.replace('name: "purchase"\n',
                              'name: "purchase"\n  stream { enable_streaming: true }\n', 1)
MULTI = "/stream/sse?entities=product,purchase"


def test_the_multi_entity_stream_keeps_each_tenant_to_its_own_rows(make_stack):
    """/stream/sse?entities=product,purchase over two tenant-scoped entities: each tenant's
    subscriber gets its own rows of both (purchase also by owner), the tenant's admin all of
    its tenant's, the platform role every tenant's; a resume with the composite Last-Event-ID
    stays within the tenant."""
    assert MULTI_CONFIG.count("enable_streaming") == 2
    stack = make_stack(from_text(MULTI_CONFIG, "tenancy.textproto"), "tenancy_multi")

    def listen(who: str, last: str | None = None) -> MultiClient:
        client = MultiClient(MULTI, as_user(who, last))
        assert client.status == 200, who
        client.blocks(1, keep=lambda event_id, data: event_id is not None)  # the position
        return client

    def write(rows: list[tuple[str, str, str | None]]) -> None:
        """(tenant, sku, purchaser): a product, or with a purchaser a purchase of it."""
        with psycopg.connect(stack.pg.dsn(stack.database), autocommit=True) as conn:
            for tenant, sku, buyer in rows:
                if buyer is None:
                    conn.execute("INSERT INTO shop.product (tenant_id, sku, name) "
                                 "VALUES (%s, %s, %s)", (tenant, sku, f"name {sku}"))
                else:
                    conn.execute("INSERT INTO shop.purchase (tenant_id, user_id, product_id, "
                                 "quantity) SELECT %s, %s, id, 1 FROM shop.product "
                                 "WHERE sku = %s", (tenant, buyer, sku))

    def seen(client: MultiClient, count: int) -> dict[str, list[str]]:
        """Per entity, in stream order: the sku of each product event, `<sku>/<user>` of
        each purchase event (the order across entities is not the stream's business)."""
        events = client.blocks(count, timeout=3)
        with psycopg.connect(stack.pg.dsn(stack.database)) as conn:
            skus = dict(conn.execute("SELECT id::text, sku FROM shop.product").fetchall())
        found: dict[str, list[str]] = {}
        for _, event, data in events:
            found.setdefault(event, []).append(data["sku"] if event == "product" else
                                               f"{skus[data['product_id']]}/{data['user_id']}")
        return found

    clients = {who: listen(who) for who in USERS}
    try:
        write([("a", "A-1", None), ("b", "B-1", None), ("a", "A-1", "u-a"),
               ("b", "B-1", "u-b"), ("a", "A-1", "u-other")])
        got = {who: seen(client, 6) for who, client in clients.items()}
    finally:
        for client in clients.values():
            client.close()
    assert got == {
        "a": {"product": ["A-1"], "purchase": ["A-1/u-a"]},
        "b": {"product": ["B-1"], "purchase": ["B-1/u-b"]},
        "admin-a": {"product": ["A-1"], "purchase": ["A-1/u-a", "A-1/u-other"]},
        "platform": {"product": ["A-1", "B-1"],
                     "purchase": ["A-1/u-a", "B-1/u-b", "A-1/u-other"]},
    }
    # Tenant a's subscriber, cut after its first event, resumes with that composite id while
    # both tenants wrote rows of both entities (one of tenant b with a's user id).
    first = listen("a")
    write([("a", "A-2", None)])
    ((position, event, _),) = first.blocks(1, timeout=3)
    first.close()
    assert event == "product" and position.startswith("product=")
    write([("b", "B-2", None), ("b", "B-2", "u-b"), ("a", "A-2", "u-a"), ("a", "A-3", None),
           ("b", "B-1", "u-a")])
    again = listen("a", position)
    try:
        assert seen(again, 4) == {"product": ["A-3"], "purchase": ["A-2/u-a"]}
    finally:
        again.close()
