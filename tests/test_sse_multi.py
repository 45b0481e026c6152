"""One stream for several entities (issue 16): `/stream/sse?entities=a,b` on real nginx with
PostgreSQL, crud-relay and Redis (the storefront example: customer with an owner, product,
order_items). Each event names its entity (`event:`) and carries as its id the position of
every included stream; Last-Event-ID resumes each of them exactly. A headless Chromium page
with one such EventSource receives changes of several entities while its REST calls go
through (six single streams would take all six connections a browser keeps per origin)."""

from __future__ import annotations

import json
import re

import pytest

from .support import EXAMPLES_DIR, call, from_textproto
from .test_realtime import ADMIN, SseClient, published, token
from .test_sse_browser import GATEWAY, PAGE_ORIGIN, page_in_browser

ENTITIES = "customer,product,order_items"
PATH = f"/stream/sse?entities={ENTITIES}"


@pytest.fixture
def store(make_stack, tmp_path):
    source = (EXAMPLES_DIR / "storefront" / "storefront.textproto").read_text()
    listed = 'allowed_origins: ["https://shop.example",'
    assert source.count(listed) == 1
    textproto = tmp_path / "storefront.textproto"
    textproto.write_text(source.replace(
        listed, f'allowed_origins: ["{PAGE_ORIGIN}", "https://shop.example",'))
    return make_stack(from_textproto(textproto), "sse_multi",
                      env={"CRUD_SSE_HEARTBEAT_MS": "500"})


class MultiClient(SseClient):
    """SseClient that keeps each block's `event:` and the id-only opening block."""

    def blocks(self, count: int, timeout: float = 10,
               keep=lambda event_id, data: event_id is not None or data is not None):
        return super().blocks(count, timeout, keep)


def customer_insert(tag: str) -> str:
    return ("INSERT INTO shop.customer (email, name, user_id) VALUES "
            f"('{tag}-a@x.io', 'A', 'alice'), ('{tag}-b@x.io', 'B', 'bob') "
            "RETURNING to_jsonb(customer)")


PRODUCT_UPDATE = ("UPDATE shop.product SET stock = stock + 1 WHERE sku = 'LAP-1' "
                  "RETURNING to_jsonb(product)")
ITEM_INSERT = ("INSERT INTO shop.order_items (product_id, quantity, price) SELECT id, 1, price "
               "FROM shop.product WHERE sku = 'LAP-1' RETURNING to_jsonb(order_items)")


def keys(changes: list[tuple[str, dict]], entity: str) -> list[tuple[str, str, str]]:
    return [(entity, row["id"], action) for action, row in changes]


def test_the_request_is_checked_per_entity_before_any_work(store, test_host):
    admin = {"Authorization": f"Bearer {token(ADMIN)}"}
    for path, status in ((f"{PATH}&email=eq.a", 400), (f"{PATH}&_=1", 400),
                         ("/stream/sse?entities=", 400), ("/stream/sse", 400),
                         ("/stream/sse?entities=product,product", 400),
                         ("/stream/sse?entities=product,no_such", 404)):
        assert call(test_host, "GET", path, admin).status == status, path
    # A refusal of any entity refuses the stream (the stand-in refuses this token for all).
    assert call(test_host, "GET", PATH, {"Authorization": "Bearer forbidden"}).status == 403
    assert call(test_host, "GET", PATH, {"Origin": "https://elsewhere.example"}).status == 403


def test_resume_after_a_cut_misses_and_repeats_nothing(store, test_host):
    """Changes of three entities, the client cut after three events, more changes of all
    three while it is away, then a reconnect with the last id it got: every change arrives
    exactly once, each entity's in its stream order, each labelled with its entity."""
    running = store
    client = MultiClient(PATH)
    assert client.status == 200
    opening = client.blocks(1)
    assert re.fullmatch(r"customer=\d+-\d+,product=\d+-\d+,order_items=\d+-\d+",
                        opening[0][0]), opening
    assert opening[0][2] is None
    expected = keys(published(running, "customer", customer_insert("m1")), "customer")
    expected += keys(published(running, "product", PRODUCT_UPDATE), "product")
    expected += keys(published(running, "order_items", ITEM_INSERT), "order_items")
    got = client.blocks(3)
    client.close()
    assert len(got) == 3
    last_id = got[-1][0]
    assert all(event in ("customer", "product", "order_items") for _, event, _ in got)
    # While it is away: changes of every entity again.
    expected += keys(published(running, "product", PRODUCT_UPDATE), "product")
    expected += keys(published(running, "customer", customer_insert("m2")), "customer")
    expected += keys(published(running, "order_items", ITEM_INSERT), "order_items")
    expected += keys(published(running, "product", PRODUCT_UPDATE), "product")
    resumed = MultiClient(PATH, {"Authorization": f"Bearer {token(ADMIN)}",
                                 "Last-Event-ID": last_id})
    assert resumed.status == 200
    assert resumed.blocks(1)[0] == (last_id, None, None)  # it starts where it was
    rest = resumed.blocks(len(expected) - 3 + 5, timeout=3)
    resumed.close()
    received = got + rest
    labels = [(event, data["id"], data["action"]) for _, event, data in received]
    assert sorted(labels) == sorted(expected)  # nothing lost, nothing repeated
    for entity in ("customer", "product", "order_items"):
        assert [x for x in labels if x[0] == entity] == [x for x in expected if x[0] == entity]
    assert all(data["table_name"] == event for _, event, data in received)


def test_owner_visibility_holds_per_entity(store, test_host):
    """A user's multi-entity stream gets only their own customer rows (the owner rule of
    customer) and every product change."""
    running = store
    alice = MultiClient(PATH, {"Authorization": "Bearer " + token(
        {"sub": "alice", "role": "authenticated"})})
    assert alice.status == 200
    alice.blocks(1)
    mine = [c for c in published(running, "customer", customer_insert("own"))
            if c[1]["user_id"] == "alice"]
    products = published(running, "product", PRODUCT_UPDATE)
    got = alice.blocks(len(mine) + len(products) + 3, timeout=3)
    alice.close()
    assert [(e, d["id"]) for _, e, d in got] == \
        [("customer", r["id"]) for _, r in mine] + [("product", r["id"]) for _, r in products]


PAGE = """<!doctype html>
<meta charset="utf-8">
<title>streams</title>
<script type="module">
const gateway = %(gateway)s;
const session = await fetch(gateway + "/stream/session", {
    method: "POST", credentials: "include", headers: {Authorization: "Bearer " + %(token)s}});
console.log("crud-sse session " + session.status);
const source = new EventSource(gateway + "/stream/sse?entities=%(entities)s",
                               {withCredentials: true});
source.onopen = async () => {
  console.log("crud-sse open");
  // Twelve REST calls, six at a time (a browser's connections per origin), while the
  // stream stays open.
  for (let round = 0; round < 2; round++) {
    const replies = await Promise.all([...Array(6).keys()].map(() =>
        fetch(gateway + "/api/v1/products", {headers: {Authorization: "Bearer " + %(token)s}})));
    console.log("crud-sse rest " + replies.map((r) => r.status).join(","));
  }
};
source.onerror = () => console.log("crud-sse error " + source.readyState);
for (const entity of %(list)s) {
  source.addEventListener(entity, (e) => console.log("crud-sse message " + JSON.stringify(
      {id: e.lastEventId, entity: e.type, data: e.data})));
}
</script>
"""


@pytest.mark.one_major
def test_a_page_with_one_multi_entity_stream_keeps_its_rest_calls(store, test_host, tmp_path):
    running = store
    html = PAGE % {"gateway": json.dumps(GATEWAY), "token": json.dumps(token(ADMIN)),
                   "entities": ENTITIES, "list": json.dumps(ENTITIES.split(","))}
    with page_in_browser(test_host, tmp_path, html) as browser:
        browser.wait(lambda: ("open", "") in browser.console())
        # Both rounds of REST calls complete while the one stream is open.
        browser.wait(lambda: [k for k, _ in browser.console() if k == "rest"] == ["rest"] * 2)
        assert [r for k, r in browser.console() if k == "rest"] == [",".join(["200"] * 6)] * 2
        changes = keys(published(running, "customer", customer_insert("page")), "customer")
        changes += keys(published(running, "product", PRODUCT_UPDATE), "product")
        browser.wait(lambda: len(browser.messages()) >= len(changes), timeout=20)
        got = [(m["entity"], json.loads(m["data"])["id"], json.loads(m["data"])["action"])
               for m in browser.messages()]
        assert got == changes
        assert all(m["id"].startswith("customer=") for m in browser.messages())
        assert [k for k, _ in browser.console()].count("open") == 1
