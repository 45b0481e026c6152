"""What a browser's own EventSource meets when a stream cannot start (issue 16, "Browser
clients"): headless Chromium opens a page on another origin (tests/test_sse_browser.py's
page_in_browser) against the generated gateway on real nginx with PostgreSQL, crud-relay and
Redis behind it. The curl-style versions of these checks are in tests/test_gateway.py.

- A stream URL with a parameter the stream does not take (a cache-buster, a misspelt column):
  the EventSource fails for good (no retry loop), and a fetch() of the same URL from the page
  can read the JSON 400 (the refusal carries the CORS headers).
- A page on an origin api.cors does not allow: the EventSource fails, and the gateway did no
  work for it (no permission check, no stream reader, no subscriber).
- The permission check's upstream down: the gateway answers a 200 stream holding only
  `retry:`, so the EventSource keeps reconnecting with its Last-Event-ID, and once PostgREST
  is back every row committed meanwhile arrives once."""

from __future__ import annotations

import json
import re
import time

import pytest

from .support import call, wait_port
from .test_realtime import ADMIN, INSERTS, published, token
from .test_sse_browser import (
    FAST_HEARTBEAT,
    GATEWAY,
    page,
    page_in_browser,
    product_files,
    start_product,
)
from .test_sse_readers import reader_connections
from .test_sse_token_logs import PORT, StandIn

ENTITY = INSERTS["product"][0]


def requests_logged(running, route: str | None = None) -> list[dict]:
    """The gateway's access-log entries (its JSON log: method, uri without the query,
    status, route), of one route or all."""
    entries = [json.loads(line) for line in running.gateway.access_log().splitlines()
               if line.startswith("{")]
    return [e for e in entries if route is None or e.get("route") == route]


def metrics_of(running, entity: str) -> dict[str, int]:
    """The gateway's per-entity stream metrics (name -> value) that exist for `entity`."""
    text = call(running.host, "GET", "/metrics", port=9145).body.decode()
    return {m[1]: int(m[2]) for m in re.finditer(
        rf'^(crud_gateway_sse_\w+){{entity="{entity}"}} (\d+)$', text, re.MULTILINE)}


REFUSED_PAGE = """<!doctype html>
<meta charset="utf-8">
<title>refused</title>
<script type="module">
for (const [label, url] of %(urls)s) {
  const source = new EventSource(url, {withCredentials: true});
  source.onopen = () => console.log("crud-sse open " + label);
  source.onerror = async () => {
    console.log("crud-sse error " + JSON.stringify({label, state: source.readyState}));
    // What the page can learn of the refusal: the same URL by fetch().
    try {
      const reply = await fetch(url, {credentials: "include"});
      console.log("crud-sse fetched " + JSON.stringify({label, status: reply.status,
          type: reply.headers.get("content-type"), body: await reply.json()}));
    } catch (error) {
      console.log("crud-sse unreadable " + JSON.stringify({label, error: String(error)}));
    }
  };
}
</script>
"""


# The page of tests/test_sse_browser.py, but going on to its EventSource when the session
# POST cannot be read (a refused origin gets no CORS headers: fetch() rejects).
ORIGIN_PAGE = """<!doctype html>
<meta charset="utf-8">
<title>refused origin</title>
<script type="module">
try {
  const session = await fetch(%(gateway)s + "/stream/session", {method: "POST",
      credentials: "include", headers: {Authorization: "Bearer " + %(token)s}});
  console.log("crud-sse session " + session.status);
} catch (error) {
  console.log("crud-sse unreadable session");
}
const source = new EventSource(%(url)s, {withCredentials: true});
source.onopen = () => console.log("crud-sse open");
source.onerror = () => console.log("crud-sse error " + source.readyState);
</script>
"""


@pytest.mark.one_major
def test_a_browser_sees_unknown_parameters_refused_and_can_read_why(make_stack, test_host,
                                                                    recording, tmp_path):
    running = start_product(make_stack, tmp_path, "sse_browser_fail")
    base = f"{GATEWAY}/stream/sse/{ENTITY}"
    urls = [("buster", f"{base}?_=1700000000"), ("misspelt", f"{base}?nmae=eq.Laptop"),
            ("multi", f"{GATEWAY}/stream/sse?entities={ENTITY}&_=1700000000")]
    recording.mark()
    html = REFUSED_PAGE % {"urls": json.dumps(urls)}
    with page_in_browser(test_host, tmp_path, html) as browser:
        def kinds(kind: str) -> list[dict]:
            return [json.loads(rest) for k, rest in browser.console() if k == kind]
        browser.wait(lambda: len(kinds("fetched")) + len(kinds("unreadable")) == len(urls))
        # Longer than a browser's own reconnection delay (3 s without `retry:`): a retrying
        # EventSource would have come back by now.
        time.sleep(4)
        console = browser.console()
    assert not [rest for kind, rest in console if kind == "open"], console
    errors = sorted((e["label"], e["state"]) for e in
                    (json.loads(rest) for kind, rest in console if kind == "error"))
    assert errors == [("buster", 2), ("misspelt", 2), ("multi", 2)], console  # 2: CLOSED
    fetched = {e["label"]: e for e in (json.loads(rest) for kind, rest in console
                                       if kind == "fetched")}
    assert sorted(fetched) == ["buster", "misspelt", "multi"], console  # CORS on the 400
    for label, parameter in (("buster", "_"), ("misspelt", "nmae"), ("multi", "_")):
        reply = fetched[label]
        assert reply["status"] == 400
        assert reply["type"] == "application/json"
        assert reply["body"]["code"] == "bad_request"
        assert f"Unknown query parameter '{parameter}'" in reply["body"]["message"]
    # Each URL was asked twice (the EventSource once, the fetch once): no retry loop; and the
    # permission check was never asked.
    streams = requests_logged(running, "sse") + requests_logged(running, "sse_multi")
    assert sorted((e["uri"], e["status"]) for e in streams) == \
        [("/stream/sse", 400)] * 2 + [(f"/stream/sse/{ENTITY}", 400)] * 4
    assert [r for r in recording.since() if r["path"] == f"/{ENTITY}"] == []


@pytest.mark.one_major
def test_a_page_on_a_refused_origin_gets_nothing_and_costs_nothing(make_stack, test_host,
                                                                   recording, tmp_path):
    """api.cors allows another origin than the page's: the page's EventSource fails for good,
    its session POST is unreadable, and the gateway neither asked PostgREST nor started a
    stream reader or a subscriber for it."""
    running = start_product(make_stack, tmp_path, "sse_browser_origin", "http://proxy:8001")
    recording.mark()
    html = ORIGIN_PAGE % {"gateway": json.dumps(GATEWAY), "token": json.dumps(token(ADMIN)),
                          "url": json.dumps(f"{GATEWAY}/stream/sse/{ENTITY}")}
    with page_in_browser(test_host, tmp_path, html) as browser:
        browser.wait(lambda: any(kind == "error" for kind, _ in browser.console()))
        time.sleep(4)  # a browser's own reconnection delay: a retry would have come by now
        console = browser.console()
        logged = [e for e in requests_logged(running) if e["uri"].startswith("/stream/")]
        metrics = metrics_of(running, ENTITY)
        readers = reader_connections(running)
    # The session answer was unreadable; the stream never opened and was not retried.
    assert console == [("unreadable", "session"), ("error", "2")], console
    # The session POST's preflight got no CORS headers, so the POST was never sent; the
    # stream was asked once.
    assert [(e["method"], e["uri"], e["status"]) for e in logged] == [
        ("OPTIONS", "/stream/session", 204), ("GET", f"/stream/sse/{ENTITY}", 403)], logged
    assert [r for r in recording.since() if r["path"] == f"/{ENTITY}"] == []
    assert metrics.get("crud_gateway_sse_readers", 0) == 0, metrics
    assert metrics.get("crud_gateway_sse_subscribers", 0) == 0, metrics
    assert metrics.get("crud_gateway_sse_reads_total", 0) == 0, metrics
    assert readers == []


@pytest.fixture
def flaky_stack(make_stack, tmp_path):
    """The product example whose PostgREST (the permission check's upstream) is a stand-in
    of this test's own, on PORT, that the test stops and starts."""
    files = product_files(tmp_path)
    conf = files["openresty/nginx.conf"]
    assert conf.count("server crud:3000;") == 1
    files["openresty/nginx.conf"] = conf.replace("server crud:3000;", f"server crud:{PORT};")
    running = make_stack(files, "sse_browser_flaky", env=FAST_HEARTBEAT)
    stand_in = StandIn(running.host, tmp_path / "requests.jsonl")
    stand_in.start()
    try:
        yield running, stand_in
    finally:
        stand_in.stop()


@pytest.mark.one_major
def test_a_browser_keeps_retrying_while_postgrest_is_down_and_misses_nothing(
        flaky_stack, test_host, tmp_path):
    """The page's stream is open (it has the opening position, no event yet); the stream ends
    (a reload) while PostgREST is down: every reconnect gets the 200 `retry:`-only stream, and
    the EventSource keeps reconnecting (an error with readyState CONNECTING each time, never
    CLOSED). Rows are committed meanwhile; once PostgREST is back they arrive, each once."""
    running, stand_in = flaky_stack
    entity, insert = INSERTS["product"]
    with page_in_browser(test_host, tmp_path, page(f"{GATEWAY}/stream/sse/{entity}",
                                                   token(ADMIN))) as browser:
        browser.wait(lambda: ("open", "") in browser.console())
        stand_in.stop()
        opened = len(requests_logged(running, "sse"))
        running.gateway.reload(running.generated / "openresty")
        # The open stream ends on the old worker (its access-log entry is written then); the
        # browser comes back after its `retry:` delay (at least 2 s).
        browser.wait(lambda: len(requests_logged(running, "sse")) > opened)
        before = len(requests_logged(running, "sse"))
        missed = published(running, entity, insert.format(tag="outage"))
        missed += published(running, entity, insert.format(tag="outage-2"))

        def turned_away() -> list[dict]:
            return [e for e in requests_logged(running, "sse")[before:] if e["status"] == 200]
        # Three reconnects while PostgREST is down, each answered with the retry stream (a
        # 200 the access log shows once it ended): the browser did not give up after one.
        browser.wait(lambda: len(turned_away()) >= 3, timeout=30)
        assert browser.messages() == []
        stand_in.start()
        wait_port(test_host, PORT)
        browser.wait(lambda: len(browser.messages()) >= len(missed), timeout=20)
        time.sleep(1.5)  # a repeat would arrive within this
        got = browser.messages()
        console = browser.console()
    rows = [json.loads(m["data"]) for m in got]
    assert [(r["action"], r["id"]) for r in rows] == [("I", row["id"]) for _, row in missed]
    errors = [state for kind, state in console if kind == "error"]
    assert len(errors) >= 4 and set(errors) == {"0"}, console  # CONNECTING: never gave up
