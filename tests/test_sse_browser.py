"""An entity stream as a browser's own EventSource reads it: headless Chromium (Debian's
`chromium`) in the test network namespace opens a page on another origin
(http://proxy:8000, served here; the backend's api.cors allows it) that subscribes to the
generated gateway on real nginx (http://proxy, with PostgreSQL, crud-relay and Redis behind
it), and reports what it receives on its console, which the test reads from Chromium's log.

Issue 16 found that a browser cut off before its first event reconnected at "now" and lost
what was committed meanwhile; the gateway now opens every stream with its position (an `id:`
block without data), which the browser keeps without dispatching an event."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .support import EXAMPLES_DIR, chromium_argv, from_textproto, wait_port
from .test_realtime import ADMIN, INSERTS, published, token

# Another origin of the same site as the gateway (another port): over plain HTTP the stream
# cookie is SameSite=Lax, which browsers send within a site only (a page of another site needs
# the gateway behind TLS, where the cookie is `Secure; SameSite=None`).
PAGE_ORIGIN = "http://proxy:8000"
GATEWAY = "http://proxy"  # the gateway's name in the namespace's hosts file, port 80
CONSOLE = re.compile(r'"crud-sse (\w+) ?(.*)", source: ' + re.escape(PAGE_ORIGIN))
# The page hands its token to the gateway once (POST /stream/session, which answers with an
# HttpOnly cookie for /stream) and opens the EventSource with credentials: no token in a URL.
PAGE = """<!doctype html>
<meta charset="utf-8">
<title>stream</title>
<script type="module">
const session = await fetch(%(gateway)s + "/stream/session", {
    method: "POST", credentials: "include", headers: {Authorization: "Bearer " + %(token)s}});
console.log("crud-sse session " + session.status);
const source = new EventSource(%(url)s, {withCredentials: true});
source.onopen = () => console.log("crud-sse open");
source.onerror = () => console.log("crud-sse error " + source.readyState);
source.onmessage = (e) => console.log("crud-sse message " + JSON.stringify(
    {id: e.lastEventId, data: e.data}));
</script>
"""


def page(url: str, token_: str) -> str:
    return PAGE % {"gateway": json.dumps(GATEWAY), "token": json.dumps(token_),
                   "url": json.dumps(url)}


class Browser:
    """Chromium showing one page, kept running; its console lines come from its log."""

    def __init__(self, netns, folder: Path, url: str):
        self.log = folder / "chromium.log"
        with self.log.open("wb") as out:
            self.process = netns.popen(*chromium_argv(folder / "profile", url), stdout=out,
                                       stderr=subprocess.STDOUT)

    def console(self) -> list[tuple[str, str]]:
        text = self.log.read_text(errors="replace")
        return [(m[1], m[2]) for m in CONSOLE.finditer(text)]

    def messages(self) -> list[dict]:
        return [json.loads(rest) for kind, rest in self.console() if kind == "message"]

    def wait(self, what, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not what():
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"waited {timeout} s; the page saw: " + repr(
                self.console())
            time.sleep(0.1)

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextlib.contextmanager
def page_in_browser(netns, tmp_path: Path, html: str) -> Iterator[Browser]:
    """`html` served at PAGE_ORIGIN/page.html and opened in headless Chromium; the page's
    server and the browser are stopped afterwards."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "page.html").write_text(html)
    server = netns.popen(sys.executable, "-m", "http.server", "8000", "--bind", "127.0.0.1",
                         "--directory", str(site), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    browser = None
    try:
        wait_port(netns, 8000)
        browser = Browser(netns, tmp_path, f"{PAGE_ORIGIN}/page.html")
        yield browser
    finally:
        if browser is not None:
            browser.close()
        server.terminate()
        server.wait(10)


def product_files(tmp_path: Path, origin: str = PAGE_ORIGIN) -> dict[str, str]:
    """The product example's generated files with api.cors allowing `origin` alone."""
    source = (EXAMPLES_DIR / "product" / "product.textproto").read_text()
    assert "\napi {\n" in source
    textproto = tmp_path / "product.textproto"
    textproto.write_text(source.replace(
        "\napi {\n", f'\napi {{\n  cors {{ allowed_origins: ["{origin}"] }}\n', 1))
    return from_textproto(textproto)


@pytest.fixture
def product_stack(make_stack, tmp_path):
    """The product example with CORS allowing the page's origin."""
    return make_stack(product_files(tmp_path), "sse_browser",
                      env={"CRUD_SSE_HEARTBEAT_MS": "500"})


@pytest.mark.one_major
def test_a_browser_cut_off_before_its_first_event_misses_nothing(product_stack, test_host,
                                                                 tmp_path):
    """The page's EventSource is open and has received no event; the gateway stops, rows are
    committed, the gateway starts again: after the browser's own reconnect every one of those
    rows arrives, once (without the opening `id:` the browser reconnects at "now" and they
    are lost)."""
    running = product_stack
    entity, insert = INSERTS["product"]
    url = f"{GATEWAY}/stream/sse/{entity}"
    with page_in_browser(test_host, tmp_path, page(url, token(ADMIN))) as browser:
        browser.wait(lambda: ("open", "") in browser.console())
        time.sleep(1)  # two heartbeats: still nothing to dispatch
        assert browser.messages() == []
        # The connection drops (the gateway stops); rows are committed while it is down.
        gateway = running.gateway
        assert gateway is not None and gateway.process is not None
        gateway.process.terminate()
        gateway.process.wait(10)
        browser.wait(lambda: any(kind == "error" for kind, _ in browser.console()))
        missed = published(running, entity, insert.format(tag="browser-missed"))
        missed += published(running, entity, insert.format(tag="browser-missed-2"))
        gateway.start({"REDIS_PASSWORD": running.redis.password, **running.env})
        wait_port(test_host, 80)
        browser.wait(lambda: len(browser.messages()) >= len(missed), timeout=20)
        time.sleep(1.5)  # a repeat would arrive within this
        got = browser.messages()
        # Every dispatched event is a change (the opening block dispatched nothing).
        rows = [json.loads(m["data"]) for m in got]
        assert [(r["action"], r["id"]) for r in rows] == [("I", row["id"]) for _, row in missed]
        assert all(m["id"] for m in got)
        opened = [kind for kind, _ in browser.console() if kind == "open"]
        assert len(opened) == 2, browser.console()  # the first connection and the reconnect


@pytest.mark.one_major
def test_a_page_on_another_origin_streams_with_the_session_cookie(product_stack, test_host,
                                                                  recording, tmp_path):
    """The page posts its token to /stream/session (a credentialed cross-origin fetch, after
    the preflight), then opens `EventSource(url, {withCredentials: true})` on a URL without
    any token: the browser sends the HttpOnly cookie, the permission check is asked with the
    page's token, and a committed change arrives."""
    running = product_stack
    entity, insert = INSERTS["product"]
    # A token of the page's own (unsigned, as the stand-in PostgREST takes any), not in a URL.
    secret = token({**ADMIN, "page": "cookie-test"})
    recording.mark()
    with page_in_browser(test_host, tmp_path,
                         page(f"{GATEWAY}/stream/sse/{entity}", secret)) as browser:
        browser.wait(lambda: ("open", "") in browser.console())
        assert ("session", "204") in browser.console()
        probes = [r for r in recording.since() if r["path"] == f"/{entity}"]
        assert [p["headers"]["authorization"] for p in probes] == [f"Bearer {secret}"]
        assert all("access_token" not in p["query"] for p in probes)
        rows = published(running, entity, insert.format(tag="browser-cookie"))
        browser.wait(lambda: len(browser.messages()) >= len(rows), timeout=20)
        got = [json.loads(m["data"]) for m in browser.messages()]
        assert [(r["action"], r["id"]) for r in got] == [("I", row["id"]) for _, row in rows]
        # The stream requests the gateway logged carry no token (the URL had none).
        assert secret not in running.gateway.access_log()
