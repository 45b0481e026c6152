"""Tokens never reach the gateway's logs (issue 16): with PostgREST down, nginx writes the
request line into its error-log lines, and a browser's EventSource used to put its token into
that line (`?access_token=`). Now a page hands its token to POST /stream/session and the
stream routes read it from the HttpOnly cookie that answer sets.

A live stack (real nginx with the generated configuration, PostgreSQL, crud-relay, Redis) goes
through every kind of failure a stream route has, and a normal stream, each with tokens that
exist only in this test; then no nginx log file (the JSON access log and the error log, both
kept by the test gateway under logs/) holds a token, nor a token's claims part. The test also
asserts that the failures did write error-log lines with the request line, so a token in the
URL would have been caught."""

from __future__ import annotations

import http.client
import itertools
import json
import secrets
import sys
from pathlib import Path

import pytest

from .support import EXAMPLES_DIR, from_textproto, wait_port
from .test_realtime import ADMIN, INSERTS, SseClient, published, token

ORIGIN = "http://proxy:8000"
PORT = 3055  # a PostgREST stand-in of this test's own, which it stops and starts again
RECORDER = Path(__file__).resolve().parent / "recorder.py"


@pytest.fixture
def stack(make_stack, tmp_path):
    source = (EXAMPLES_DIR / "product" / "product.textproto").read_text()
    textproto = tmp_path / "product.textproto"
    textproto.write_text(source.replace(
        "\napi {\n", f'\napi {{\n  cors {{ allowed_origins: ["{ORIGIN}"] }}\n', 1))
    files = from_textproto(textproto)
    conf = files["openresty/nginx.conf"]
    assert conf.count("server crud:3000;") == 1
    files["openresty/nginx.conf"] = conf.replace("server crud:3000;", f"server crud:{PORT};")
    return make_stack(files, "token_logs", env={"CRUD_SSE_HEARTBEAT_MS": "500"})


class StandIn:
    """tests/recorder.py on PORT, for this test alone."""

    def __init__(self, host, log: Path):
        self.host, self.log, self.process = host, log, None

    def start(self) -> None:
        self.process = self.host.popen(sys.executable, str(RECORDER), str(PORT), str(self.log))
        wait_port(self.host, PORT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        wait_port(self.host, PORT, up=False)


def get(host, path: str, headers: dict[str, str], source: str) -> tuple[int, str]:
    """One GET on its own connection; the status and the body (a stream that ends by
    itself: a retry, or a refusal)."""
    conn = http.client.HTTPConnection("127.0.0.1", 80, timeout=10, source_address=(source, 0))
    with host.inside():
        conn.connect()
    try:
        conn.request("GET", path, headers=headers)
        reply = conn.getresponse()
        return reply.status, reply.read().decode()
    finally:
        conn.close()


def test_no_token_reaches_any_gateway_log(stack, test_host, tmp_path):
    running = stack
    entity, insert = INSERTS["product"]
    path = f"/stream/sse/{entity}"
    sources = (f"127.0.8.{n}" for n in itertools.count(1))
    marker = secrets.token_hex(8)
    good = token({**ADMIN, "marker": marker})
    bad = f"forbidden.{secrets.token_hex(12)}.x"  # the stand-in refuses it (403)
    limited = f"forbidden.{secrets.token_hex(12)}.y"
    legacy = token({**ADMIN, "marker": marker + "-url"})
    tokens = [good, bad, limited, legacy]
    stand_in = StandIn(test_host, tmp_path / "requests.jsonl")
    stand_in.start()
    try:
        # The page's one request with its token in a header: the cookie comes back.
        conn = http.client.HTTPConnection("127.0.0.1", 80, timeout=10)
        with test_host.inside():
            conn.connect()
        conn.request("POST", "/stream/session", headers={"Authorization": f"Bearer {good}",
                                                         "Origin": ORIGIN})
        reply = conn.getresponse()
        reply.read()
        conn.close()
        assert reply.status == 204
        assert reply.getheader("Set-Cookie").startswith(f"crud_stream_token={good};")
        cookie = {"Cookie": f"crud_stream_token={good}", "Origin": ORIGIN}

        # A normal stream on the cookie: a committed change arrives.
        client = SseClient(path, cookie)
        assert client.status == 200
        rows = published(running, entity, insert.format(tag="token-logs"))
        got = client.events(len(rows))
        assert [(d["action"], d["id"]) for _, d in got] == [("I", r["id"]) for _, r in rows]
        client.close()
        probes = [json.loads(line) for line in stand_in.log.read_text().splitlines()]
        assert probes[-1]["headers"]["authorization"] == f"Bearer {good}"

        # A bad token, in the cookie and in the header: refused.
        assert get(test_host, path, {"Cookie": f"crud_stream_token={bad}"},
                   next(sources))[0] == 403
        assert get(test_host, path, {"Authorization": f"Bearer {bad}"}, next(sources))[0] == 403
        # A refused origin, with the good cookie.
        status, body = get(test_host, path, {**cookie, "Origin": "https://elsewhere.example"},
                           next(sources))
        assert status == 403 and "elsewhere.example is not allowed" in body
        # A client still putting its token into the URL: refused before anything could log it.
        status, body = get(test_host, f"{path}?access_token={legacy}", {}, next(sources))
        assert status == 400 and "access_token" in body

        # PostgREST down: the permission check cannot connect (nginx logs it, with the request
        # line); the client is told to retry.
        stand_in.stop()
        for headers in (cookie, {"Authorization": f"Bearer {good}"}):
            status, body = get(test_host, path, headers, next(sources))
            assert status == 200 and body.startswith("retry: ") and "unavailable" in body
        stand_in.start()

        # Redis down: the stream cannot read; told to retry.
        running.redis.kill(9)
        try:
            status, body = get(test_host, path, cookie, next(sources))
            assert status == 200 and body.startswith("retry: ") and "unavailable" in body
        finally:
            running.redis.start()

        # Over the rate limit (one address, one token): told to retry; nginx logs the limit.
        source = next(sources)
        for _ in range(200):
            status, body = get(test_host, path, {"Cookie": f"crud_stream_token={limited}"},
                               source)
            assert status in (200, 403), status
            if status == 200:
                assert "rate limited" in body, body
                break
        else:
            raise AssertionError("never rate limited")
    finally:
        stand_in.stop()

    logs = {p.name: p.read_text(errors="replace")
            for p in (running.gateway.prefix / "logs").iterdir() if p.is_file()}
    text = "\n".join(logs.values())
    for secret in tokens:
        for part in {secret, *secret.split(".")[1:2]}:
            leaked = [name for name, content in logs.items() if part in content]
            assert leaked == [], (part, leaked)
    assert marker not in text
    # The failures wrote error-log lines that carry the request line: a token in the URL would
    # be in them.
    assert f'request: "GET {path} HTTP/1.1", subrequest: "/_crud_authz/{entity}"' in text
    assert "connect() failed" in text
    assert "limiting requests" in text and f'request: "GET {path} HTTP/1.1"' in text
    assert "sse: redis:" in text
    assert f'"uri":"{path}"' in text  # the access log
