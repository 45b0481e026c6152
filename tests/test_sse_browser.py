"""An entity stream as a browser's own EventSource reads it: headless Chromium (Debian's
`chromium`) in the test network namespace opens a page on another origin
(http://proxy:8000, served here; the backend's api.cors allows it) that subscribes to the
generated gateway on real nginx (http://proxy, with PostgreSQL, crud-relay and Redis behind
it), and reports what it receives on its console, which the test reads from Chromium's log.

Issue 16 found that a browser cut off before its first event reconnected at "now" and lost
what was committed meanwhile; the gateway now opens every stream with its position (an `id:`
block without data), which the browser keeps without dispatching an event."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import re
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from protoc_gen_crud.devstack import nginx_binary

from .support import EXAMPLES_DIR, chromium_argv, from_textproto, wait_port
from .test_realtime import ADMIN, INSERTS, published, token

# Another origin of the same site as the gateway (another port): over plain HTTP the stream
# cookie is SameSite=Lax, which browsers send within a site only (a page of another site needs
# the gateway behind TLS, where the cookie is `Secure; SameSite=None; Partitioned`).
PAGE_ORIGIN = "http://proxy:8000"
GATEWAY = "http://proxy"  # the gateway's name in the namespace's hosts file, port 80
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


def page(url: str, token_: str, gateway: str = GATEWAY) -> str:
    return PAGE % {"gateway": json.dumps(gateway), "token": json.dumps(token_),
                   "url": json.dumps(url)}


class Browser:
    """Chromium showing one page, kept running; its console lines come from its log."""

    def __init__(self, netns, folder: Path, url: str, origin: str = PAGE_ORIGIN,
                 flags: tuple[str, ...] = ()):
        self.log = folder / "chromium.log"
        self.lines = re.compile(r'"crud-sse (\w+) ?(.*)", source: ' + re.escape(origin))
        with self.log.open("wb") as out:
            self.process = netns.popen(*chromium_argv(folder / "profile", *flags, url),
                                       stdout=out, stderr=subprocess.STDOUT)

    def console(self) -> list[tuple[str, str]]:
        text = self.log.read_text(errors="replace")
        return [(m[1], m[2]) for m in self.lines.finditer(text)]

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
def page_in_browser(netns, tmp_path: Path, html: str, origin: str = PAGE_ORIGIN,
                    flags: tuple[str, ...] = ()) -> Iterator[Browser]:
    """`html` served at <origin>/page.html (an http origin on port 8000 of a name for
    127.0.0.1) and opened in headless Chromium (with `flags`); the page's server and the
    browser are stopped afterwards."""
    assert origin.startswith("http://") and origin.endswith(":8000"), origin
    site = tmp_path / "site"
    site.mkdir(parents=True)
    (site / "page.html").write_text(html)
    server = netns.popen(sys.executable, "-m", "http.server", "8000", "--bind", "127.0.0.1",
                         "--directory", str(site), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    browser = None
    try:
        wait_port(netns, 8000)
        browser = Browser(netns, tmp_path, f"{origin}/page.html", origin, flags)
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


# Heartbeats twice a second, so that the browser tests' waits stay short.
FAST_HEARTBEAT = {"CRUD_SSE_HEARTBEAT_MS": "500"}


def start_product(make_stack, tmp_path: Path, database: str, origin: str = PAGE_ORIGIN):
    """The product example running (make_stack) with api.cors allowing `origin` alone."""
    return make_stack(product_files(tmp_path, origin), database, env=FAST_HEARTBEAT)


@pytest.fixture
def product_stack(make_stack, tmp_path):
    """The product example with CORS allowing the page's origin."""
    return start_product(make_stack, tmp_path, "sse_browser")


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


# A page of another site than the gateway's ("127.0.0.1" and "proxy" are different sites).
OTHER_SITE = "http://127.0.0.1:8000"
TLS_PORT = 8443
TLS_FRONT = """daemon off;
master_process off;
user root;
pid %(dir)s/front.pid;
error_log %(dir)s/front-error.log;
events {}
http {
    access_log off;
    client_body_temp_path %(dir)s/body;
    proxy_temp_path %(dir)s/proxy;
    server {
        listen %(port)d ssl;
        ssl_certificate %(dir)s/cert.pem;
        ssl_certificate_key %(dir)s/key.pem;
        location / {
            proxy_pass http://127.0.0.1:80;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-Proto https;
            proxy_buffering off;
            proxy_read_timeout 1h;
        }
    }
}
"""


@contextlib.contextmanager
def tls_front(netns, folder: Path) -> Iterator[tuple[str, str]]:
    """nginx terminating TLS (a self-signed certificate for "proxy") on TLS_PORT in front of
    the gateway, as a TLS front does: it sets X-Forwarded-Proto: https. Its base URL, and the
    Chromium flag that trusts its certificate."""
    folder.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=proxy", "-addext", "subjectAltName=DNS:proxy",
                    "-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem")],
                   check=True, capture_output=True)
    # Chromium takes the certificate as valid when told its key's hash (a profile of its own).
    key = subprocess.run(["openssl", "x509", "-in", str(folder / "cert.pem"), "-pubkey",
                          "-noout"], check=True, capture_output=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=key,
                         check=True, capture_output=True).stdout
    spki = base64.b64encode(hashlib.sha256(der).digest()).decode()
    conf = folder / "front.conf"
    conf.write_text(TLS_FRONT % {"dir": folder, "port": TLS_PORT})
    process = netns.popen(nginx_binary()[0], "-p", f"{folder}/", "-c", str(conf),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(netns, TLS_PORT)
        yield f"https://proxy:{TLS_PORT}", f"--ignore-certificate-errors-spki-list={spki}"
    finally:
        process.terminate()
        process.wait(10)


@pytest.mark.one_major
def test_the_session_cookie_reaches_a_stream_of_another_site_only_over_tls(
        make_stack, test_host, recording, tmp_path):
    """A page of another site (api.cors allows it) posts its token to /stream/session and opens
    a credentialed EventSource. Behind a TLS front (X-Forwarded-Proto: https) the cookie is
    `Secure; SameSite=None; Partitioned`, Chromium (default settings, which block unpartitioned
    third-party cookies) sends it with the cross-site stream request, and the permission check
    is asked with the page's token; without `Partitioned` it was not sent. Over plain HTTP it
    is `SameSite=Lax`, and Chromium keeps it out of the cross-site request: the check is asked
    without a token."""
    running = start_product(make_stack, tmp_path, "sse_browser_tls", OTHER_SITE)
    entity, insert = INSERTS["product"]
    secret = token({**ADMIN, "page": "tls-cookie"})
    probes, received = {}, {}
    with tls_front(test_host, tmp_path / "front") as (front, trust):
        # What each answers to the page's session POST (the front passes on the gateway's).
        attributes = {label: session_cookie(test_host, port, tls, secret).split("; ")[1:]
                      for label, port, tls in (("tls", TLS_PORT, True), ("plain", 80, False))}
        assert attributes == {"tls": ["Path=/stream", "HttpOnly", "Secure", "SameSite=None",
                                      "Partitioned"],
                              "plain": ["Path=/stream", "HttpOnly", "SameSite=Lax"]}
        for label, gateway in (("tls", front), ("plain", GATEWAY)):
            recording.mark()
            html = page(f"{gateway}/stream/sse/{entity}", secret, gateway)
            with page_in_browser(test_host, tmp_path / label, html, OTHER_SITE,
                                 (trust,)) as browser:
                browser.wait(lambda: ("open", "") in browser.console())
                assert ("session", "204") in browser.console()
                probes[label] = [r["headers"].get("authorization") for r in recording.since()
                                 if r["path"] == f"/{entity}"]
                if label == "tls":
                    received[label] = arrived(browser, running, entity, insert)
    assert probes == {"tls": [f"Bearer {secret}"], "plain": [None]}
    assert received["tls"][0] == received["tls"][1]  # and a committed change arrived


def session_cookie(netns, port: int, tls: bool, secret: str) -> str:
    """The Set-Cookie of POST /stream/session on 127.0.0.1:<port> (TLS or not)."""
    if tls:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10,
                                           context=ssl._create_unverified_context())
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    with netns.inside():
        conn.connect()
    try:
        conn.request("POST", "/stream/session", headers={"Authorization": f"Bearer {secret}",
                                                         "Origin": OTHER_SITE})
        reply = conn.getresponse()
        reply.read()
        assert reply.status == 204
        return reply.getheader("Set-Cookie")
    finally:
        conn.close()


def arrived(browser: Browser, running, entity: str, insert: str) -> tuple[list, list]:
    """Rows committed now, and what the page then received: (their ids, the events' ids)."""
    rows = published(running, entity, insert.format(tag="arrived"))
    browser.wait(lambda: len(browser.messages()) >= len(rows), timeout=20)
    return [row["id"] for _, row in rows], [json.loads(m["data"])["id"]
                                            for m in browser.messages()]
