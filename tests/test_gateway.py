"""The generated gateway on real nginx (with Lua), in front of a recording PostgREST stand-in.

Everything runs in a private network namespace whose hosts file maps `crud` to its loopback,
so the generated nginx.conf (upstream crud:3000, listen 80) runs exactly as generated.
The expected PostgREST requests are derived from the model, not from the generated file.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import itertools
import json
import re
import subprocess
import time

import pytest

from protoc_gen_crud.devstack import Gateway

from .support import (
    EXAMPLES,
    EXAMPLES_DIR,
    Response,
    call,
    from_textproto,
    model_of,
    serving_gateway,
    write_tree,
)

SINGULAR = "application/vnd.pgrst.object+json"


@pytest.fixture(scope="session")
def netns(test_host):
    return test_host


@pytest.mark.parametrize("name", EXAMPLES)
def test_nginx_accepts_the_generated_config(name, netns, tmp_path):
    out = write_tree(from_textproto(EXAMPLES_DIR / name / f"{name}.textproto"), tmp_path)
    gateway = Gateway(netns, out / "openresty")
    try:
        done = gateway.test_config()
        assert done.returncode == 0, done.stderr
    finally:
        gateway.stop()


@pytest.fixture(scope="module", params=EXAMPLES)
def gateway(request, netns, recording, tmp_path_factory):
    name = request.param
    out = write_tree(from_textproto(EXAMPLES_DIR / name / f"{name}.textproto"),
                     tmp_path_factory.mktemp(name))
    with serving_gateway(netns, out / "openresty") as running:
        yield model_of(name), running


def test_collection_requests_pass_through(gateway, netns, recording):
    backend, _ = gateway
    for e in backend.entities:
        route = e.base_path + e.path
        recording.mark()
        query = "category=eq.Books&order=price.desc&limit=10"
        headers = {"Prefer": "count=exact", "Range": "0-9", "Authorization": "Bearer abc"}
        reply = call(netns, "GET", f"{route}?{query}", headers)
        assert reply.status == 200
        seen = recording.one()
        assert (seen["method"], seen["path"], seen["query"]) == ("GET", f"/{e.name}", query)
        for key, value in headers.items():
            assert seen["headers"][key.lower()] == value
        assert seen["headers"]["x-request-id"] == reply.headers["x-request-id"]

        recording.mark()
        body = json.dumps({"name": "Laptop", "price": 999.99})
        reply = call(netns, "POST", route, {"Content-Type": "application/json",
                                           "Prefer": "return=representation"}, body)
        assert reply.status == 201
        seen = recording.one()
        assert (seen["method"], seen["path"], seen["query"], seen["body"]) == (
            "POST", f"/{e.name}", "", body)
        assert seen["headers"]["prefer"] == "return=representation"


def test_keys_that_are_no_column_are_refused_with_columns(gateway, netns, recording):
    """With ?columns= PostgREST reads only the named keys and ignores the rest, so a binding's
    lowerCamelCase names would vanish: the gateway refuses them with PostgREST's PGRST204."""
    backend, _ = gateway
    for e in backend.entities:
        route = e.base_path + e.path
        good = {c.name: None for c in e.columns if not c.implicit}
        columns = ",".join(good)
        headers = {"Content-Type": "application/json", "Prefer": "missing=default"}
        recording.mark()
        reply = call(netns, "POST", f"{route}?columns={columns}", headers,
                     json.dumps([good, {**good, "createdAt": "x"}]))
        assert reply.status == 400, e.name
        error = json.loads(reply.body)
        assert error["code"] == "PGRST204"
        assert error["message"] == (f"Could not find the 'createdAt' column of '{e.name}' in "
                                    "the schema cache")
        assert recording.since() == [], "refused before PostgREST"
        # Proto field names pass through, untouched; so does a body without ?columns=.
        body = json.dumps([good, good])
        reply = call(netns, "POST", f"{route}?columns={columns}", headers, body)
        seen = recording.one()
        assert (seen["method"], seen["query"], seen["body"]) == ("POST", f"columns={columns}",
                                                                 body)
        recording.mark()
        camel = json.dumps({"createdAt": "x"})
        call(netns, "POST", route, headers, camel)
        assert recording.one()["body"] == camel, "PostgREST itself refuses it (PGRST204)"


def test_single_row_shapes(gateway, netns, recording):
    backend, _ = gateway
    for e in backend.entities:
        (key,) = e.primary_key
        item = f"{e.base_path}{e.path}/42"
        cases = [
            ("GET", item, {}, None, f"{key}=eq.42", "return=representation"),
            ("GET", item + "?select=id,name", {}, None, f"{key}=eq.42&select=id,name", None),
            ("PATCH", item, {"Content-Type": "application/json"}, '{"name":"x"}',
             f"{key}=eq.42", "return=representation"),
            ("PATCH", item, {"Prefer": "return=minimal"}, '{"name":"x"}', f"{key}=eq.42",
             "return=minimal"),
            ("PUT", item, {"Content-Type": "application/json"}, '{"id":42}', f"{key}=eq.42",
             "return=representation"),
            ("DELETE", item, {}, None, f"{key}=eq.42", "return=representation"),
        ]
        for method, path, headers, body, query, prefer in cases:
            recording.mark()
            reply = call(netns, method, path, headers, body)
            assert reply.status == 200, (method, path, reply.body)
            seen = recording.one()
            assert (seen["method"], seen["path"], seen["query"]) == (method, f"/{e.name}",
                                                                     query)
            assert seen["headers"]["accept"] == SINGULAR
            if prefer:
                assert seen["headers"]["prefer"] == prefer
            assert seen["body"] == (body or "")
        recording.mark()
        reply = call(netns, "POST", item, {"Content-Type": "application/json"}, "{}")
        assert reply.status == 405 and reply.json()["code"] == "method_not_allowed"
        assert recording.since() == []


def test_missing_row_is_a_json_404(gateway, netns, recording):
    backend, _ = gateway
    for e in backend.entities:
        reply = call(netns, "GET", f"{e.base_path}{e.path}/missing")
        assert reply.status == 404
        assert reply.headers["content-type"].startswith("application/json")
        assert reply.json() == {"code": "not_found", "message": "No such row"}


def test_custom_endpoints_map_to_rpc(gateway, netns, recording):
    backend, _ = gateway
    for ep in backend.endpoints:
        route = ep.base_path + ep.path
        recording.mark()
        if ep.method == "GET":
            reply = call(netns, "GET", route + "?p1=rust&limit=5")
            seen = recording.one()
            assert (seen["method"], seen["path"], seen["query"]) == (
                "GET", f"/rpc/{ep.function}", "p1=rust&limit=5")
            wrong = "POST"
        else:
            body = json.dumps({p.name: "1" for p in ep.params})
            reply = call(netns, "POST", route, {"Content-Type": "application/json"}, body)
            seen = recording.one()
            assert (seen["method"], seen["path"], seen["body"]) == (
                "POST", f"/rpc/{ep.function}", body)
            wrong = "GET"
        assert reply.status in (200, 201)
        recording.mark()
        reply = call(netns, wrong, route)
        assert reply.status == 405 and recording.since() == []


def test_unknown_paths_get_a_json_404(gateway, netns, recording):
    recording.mark()
    for path in ("/nope", "/api/v1/nope", "/api/v1/products/1/extra", "/api/v2/products"):
        backend, _ = gateway
        if any(path == e.base_path + e.path for e in backend.entities):
            continue
        reply = call(netns, "GET", path)
        assert reply.status == 404, path
        assert reply.json()["code"] == "not_found"
    assert recording.since() == []


def test_live_and_health(gateway, netns):
    """/live answers for the gateway alone; /health names each part it depends on. Here no
    relay runs (and the gateway has no Redis password), so it is 503 with the relay down,
    while the API (the stand-in on crud:3000) is up."""
    backend, _ = gateway
    reply = call(netns, "GET", "/live")
    assert reply.status == 200 and reply.json() == {"status": "ok"}
    reply = call(netns, "GET", "/health")
    body = reply.json()
    expected = {"api", "graphql"} | ({"redis", "relay"} if backend.streamed else set())
    assert set(body["parts"]) == expected, body
    assert body["parts"]["api"] == "up", body
    if backend.streamed:
        assert body["parts"]["relay"] == "down", body
    down = sorted(name for name, state in body["parts"].items() if state != "up")
    assert reply.status == (503 if down else 200)
    assert body["status"] == ("degraded" if down else "ok")
    assert call(netns, "POST", "/health").status == 405


def test_cors(gateway, netns, recording):
    backend, _ = gateway
    entity = backend.entities[0]
    route = entity.base_path + entity.path
    allowed = backend.cors.allowed_origins
    recording.mark()
    for origin in ("https://evil.example", *allowed):
        reply = call(netns, "OPTIONS", route, {"Origin": origin,
                                               "Access-Control-Request-Method": "PATCH",
                                               "Access-Control-Request-Headers": "authorization"})
        assert reply.status == 204
        if origin in allowed:
            assert reply.headers["access-control-allow-origin"] == origin
            assert "PATCH" in reply.headers["access-control-allow-methods"]
            assert "Authorization" in reply.headers["access-control-allow-headers"]
            assert reply.headers["access-control-max-age"] == str(backend.cors.max_age_seconds)
            assert (reply.headers.get("access-control-allow-credentials") == "true") == (
                backend.cors.allow_credentials)
        else:
            assert "access-control-allow-origin" not in reply.headers
    assert recording.since() == [], "preflights must be answered by the gateway"
    for origin in allowed:
        reply = call(netns, "GET", route, {"Origin": origin})
        assert reply.headers["access-control-allow-origin"] == origin
        assert reply.headers["vary"] == "Origin"
        assert "Content-Range" in reply.headers["access-control-expose-headers"]


def test_gzip_for_json(gateway, netns):
    backend, _ = gateway
    entity = backend.entities[0]
    reply = call(netns, "GET", f"{entity.base_path}{entity.path}?big=1",
                 {"Accept-Encoding": "gzip"})
    assert reply.headers.get("content-encoding") == "gzip"
    assert len(json.loads(gzip.decompress(reply.body))) == 200


def test_request_body_limit(gateway, netns, recording):
    backend, _ = gateway
    entity = backend.entities[0]
    limit = backend.rate_limit.max_body_size
    size = {"k": 1024, "m": 1024 * 1024}[limit[-1].lower()] * int(limit[:-1])
    recording.mark()
    reply = call(netns, "POST", entity.base_path + entity.path,
                 {"Content-Type": "application/json"}, b"x" * (size + 1))
    assert reply.status == 413
    assert reply.json()["code"] == "payload_too_large"
    assert recording.since() == []


def metric(netns, name: str) -> float:
    text = call(netns, "GET", "/metrics", port=9145).body.decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def counted(netns, series: str, timeout: float = 5) -> float:
    """A counter once it is above zero (or after `timeout`): nginx counts a request in its
    log phase, after the answer went out, so the count may land just after the answer."""
    deadline = time.monotonic() + timeout
    while metric(netns, series) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    return metric(netns, series)


def test_metrics_by_route_and_status(gateway, netns):
    backend, _ = gateway
    entity = backend.entities[0]
    route = entity.base_path + entity.path
    counter = f'crud_gateway_requests_total{{route="{entity.name}",status="200"}}'
    labels = f'route="{entity.name}",status="200"'
    count = f"crud_gateway_request_duration_seconds_count{{{labels}}}"
    inf = f'crud_gateway_request_duration_seconds_bucket{{{labels},le="+Inf"}}'
    before, count_before = metric(netns, counter), metric(netns, count)
    for _ in range(3):
        assert call(netns, "GET", route).status == 200
    time.sleep(0.1)  # the log phase runs after the response is sent
    assert metric(netns, counter) - before == 3
    assert metric(netns, count) - count_before == 3
    assert metric(netns, inf) == metric(netns, count)
    assert call(netns, "GET", "/metrics").status == 404, "metrics are not on the public port"
    exposition = call(netns, "GET", "/metrics", port=9145).body
    # Buckets are cumulative (the gateway counts each request in one bucket and adds them up
    # when scraped): never decreasing, and these fast requests are all within the last bound.
    buckets = [float(line.rsplit(" ", 1)[1]) for line in exposition.decode().splitlines()
               if line.startswith(f"crud_gateway_request_duration_seconds_bucket{{{labels},")]
    assert len(buckets) == 12 and buckets == sorted(buckets), buckets
    assert buckets[-2] == buckets[-1] == metric(netns, count), buckets
    lint = subprocess.run(["promtool", "check", "metrics"], input=exposition,
                          capture_output=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_json_access_log_with_request_id(gateway, netns):
    backend, running = gateway
    entity = backend.entities[0]
    reply = call(netns, "GET", entity.base_path + entity.path)
    request_id = reply.headers["x-request-id"]
    time.sleep(0.1)
    lines = [json.loads(line) for line in running.access_log().splitlines()
             if line.startswith("{")]
    mine = [line for line in lines if line["request_id"] == request_id]
    assert len(mine) == 1
    assert (mine[0]["status"], mine[0]["route"], mine[0]["method"]) == (200, entity.name, "GET")


def test_upstream_connections_are_kept_alive(gateway, netns, recording):
    backend, _ = gateway
    entity = backend.entities[0]
    recording.mark()
    for _ in range(10):
        call(netns, "GET", entity.base_path + entity.path)
    ports = {seen["peer_port"] for seen in recording.since()}
    assert len(ports) < 10


def until_limited(netns, path: str, headers: dict, source: str = "127.0.0.1",
                  method: str = "GET", body: str | None = None) -> tuple[int, Response]:
    """Send requests over one connection until the gateway answers 429: how many passed,
    and the 429 answer."""
    conn = http.client.HTTPConnection("127.0.0.1", 80, timeout=10, source_address=(source, 0))
    with netns.inside():
        conn.connect()
    try:
        for passed in range(1000):
            conn.request(method, path, body=body, headers=headers)
            reply = conn.getresponse()
            data = reply.read()
            if reply.status == 429:
                return passed, Response(reply.status,
                                        {k.lower(): v for k, v in reply.getheaders()}, data)
    finally:
        conn.close()
    raise AssertionError("never rate limited")


def exhaust(netns, path: str, headers: dict, source: str) -> int:
    """Send requests over one connection until the gateway answers 429; how many passed."""
    return until_limited(netns, path, headers, source)[0]


def test_rate_limit_per_token_follows_the_token_across_addresses(gateway, netns):
    backend, _ = gateway
    rate = backend.rate_limit
    entity = backend.entities[0]
    path = entity.base_path + entity.path
    time.sleep(rate.burst / rate.requests_per_second + 0.2)
    token = {"Authorization": "Bearer token-one"}
    assert exhaust(netns, path, token, "127.0.0.3") >= rate.burst
    # Same token from another address: limited at once (only what refilled meanwhile gets
    # through, however slow the machine). Another token, or none, from there: its full burst.
    assert exhaust(netns, path, token, "127.0.0.4") < rate.burst // 2
    other = {"Authorization": "Bearer token-two"}
    assert call(netns, "GET", path, other, source="127.0.0.6").status == 200
    assert call(netns, "GET", path, source="127.0.0.5").status == 200


def test_rate_limit_answers_429_after_the_burst(gateway, netns, recording):
    """Runs last for each gateway: it uses up the client's allowance."""
    backend, _ = gateway
    rate = backend.rate_limit
    assert rate.requests_per_second > 0
    entity = backend.entities[0]
    time.sleep(rate.burst / rate.requests_per_second + 0.2)  # earlier tests' excess drains
    conn = http.client.HTTPConnection("127.0.0.1", 80, timeout=10)
    with netns.inside():
        conn.connect()  # one keep-alive connection: requests faster than the refill rate
    statuses, started = [], time.monotonic()
    try:
        for _ in range(rate.burst + 3 * rate.requests_per_second + 20):
            conn.request("GET", entity.base_path + entity.path)
            reply = conn.getresponse()
            body = reply.read()
            statuses.append(reply.status)
            if reply.status == 429:
                break
    finally:
        conn.close()
    elapsed = time.monotonic() - started
    assert statuses[-1] == 429, f"no 429 after {len(statuses)} requests in {elapsed:.2f}s"
    allowed = len(statuses) - 1
    refilled = rate.requests_per_second * elapsed
    assert rate.burst < allowed <= rate.burst + refilled + 2, (allowed, elapsed)
    assert reply.getheader("Retry-After") == "1"
    assert json.loads(body)["code"] == "rate_limited"


def test_the_served_openapi_document_is_valid_and_every_path_works(gateway, netns, recording):
    """GET <base>/ and <base>/openapi.json serve the generated OpenAPI 3.1 document (not
    PostgREST's, whose /<table> paths 404 here); it passes openapi-spec-validator, and every
    path and method it advertises reaches what it describes through the real gateway."""
    from openapi_spec_validator import validate

    backend, _ = gateway
    # Each request from its own address: the module's earlier tests used up the rate limit
    # of 127.0.0.1 (per address and per token).
    sources = (f"127.0.3.{n}" for n in itertools.count(1))
    bases = sorted({e.base_path for e in backend.entities})
    documents = []
    for base in bases:
        for path in (f"{base}/", f"{base}/openapi.json"):
            recording.mark()
            reply = call(netns, "GET", path, source=next(sources))
            assert reply.status == 200 and recording.since() == [], path
            assert reply.headers["content-type"].startswith("application/json")
            documents.append(json.loads(reply.body))
        assert call(netns, "POST", f"{base}/openapi.json", body="{}",
                    source=next(sources)).status == 405
    document = documents[0]
    assert all(d == document for d in documents)
    validate(document)
    assert document["openapi"] == "3.1.0"
    walked = 0
    for path, item in document["paths"].items():
        for method in ("get", "post", "patch", "put", "delete"):
            if method not in item:
                continue
            concrete = path.replace("{id}", "1")
            recording.mark()
            if path == "/stream/session":
                # Answered by the gateway itself (a cookie; nothing asked of PostgREST).
                reply = call(netns, method.upper(), path, {"Authorization": "Bearer x.e30.x"},
                             source=next(sources))
                assert reply.status == 204 and recording.since() == [], (method, path)
            elif path == "/stream/sse":
                first = backend.streamed[0].name
                reply = call(netns, "GET", f"{path}?entities={first}",
                             {"Authorization": "Bearer x.e30.x"}, source=next(sources))
                assert reply.status != 404, (method, path)
                assert recording.since()[0]["path"] == f"/{first}"
            elif path.startswith("/stream/sse/"):
                # The stream route answers (its permission check goes to PostgREST first).
                reply = call(netns, "GET", concrete, {"Authorization": "Bearer x.e30.x"},
                             source=next(sources))
                assert reply.status != 404, (method, path)
                assert recording.since()[0]["path"] == "/" + path.rsplit("/", 1)[1]
            else:
                body = "{}" if method in ("post", "patch", "put") else None
                reply = call(netns, method.upper(), concrete,
                             {"Content-Type": "application/json"}, body,
                             source=next(sources))
                assert reply.status not in (404, 405), (method, path, reply.status)
                assert len(recording.since()) == 1, (method, path)
            walked += 1
    entities = backend.entities
    assert walked >= 4 * len(entities) + len(backend.endpoints)


def test_streams_refuse_unknown_query_parameters_before_any_work(gateway, netns, recording):
    """A cache-buster (`?_=…`) or a misspelt column would become a filter no event matches:
    a JSON 400 before the permission check or Redis; columns and the stream's own
    parameters go on to the permission check."""
    backend, _ = gateway
    sources = (f"127.0.4.{n}" for n in itertools.count(1))
    for entity in backend.streamed:
        path = f"/stream/sse/{entity.name}"
        for query in ("_=1700000000", "no_such_column=eq.1"):
            recording.mark()
            reply = call(netns, "GET", f"{path}?{query}", source=next(sources))
            assert reply.status == 400, (entity.name, query)
            error = json.loads(reply.body)
            assert error["code"] == "bad_request"
            assert f"Unknown query parameter '{query.split('=')[0]}'" in error["message"]
            assert recording.since() == [], "refused before the permission check"
        column = entity.columns[0].name
        recording.mark()
        call(netns, "GET", f"{path}?{column}=eq.x&history=5&action=I", {"Authorization":
             "Bearer x.e30.x"}, source=next(sources))
        assert recording.since()[0]["path"] == f"/{entity.name}", "went on to the check"


RETRY_ONLY = re.compile(r"retry: (\d+)\n: (unavailable|rate limited)\n\n")


def test_transient_stream_failures_tell_browsers_to_retry(gateway, netns, recording):
    """An EventSource gives up for good on any status but 200 (HTML, "fail the connection"):
    PostgREST unavailable for the permission check, or the rate limit, answers a 200 event
    stream holding only a jittered `retry:` (no id, so the client keeps its Last-Event-ID),
    which browsers follow. A refusal that will not pass by itself stays a JSON 403."""
    backend, _ = gateway
    sources = (f"127.0.6.{n}" for n in itertools.count(1))
    delays = set()
    for entity in backend.streamed:
        path = f"/stream/sse/{entity.name}"
        for _ in range(3):
            reply = call(netns, "GET", path, {"Authorization": "Bearer db-down"},
                         source=next(sources))
            assert reply.status == 200, (entity.name, reply.status, reply.body)
            assert reply.headers["content-type"] == "text/event-stream"
            found = RETRY_ONLY.fullmatch(reply.body.decode())
            assert found and found.group(2) == "unavailable", reply.body
            assert 2000 <= int(found.group(1)) <= 5000
            delays.add(int(found.group(1)))
        denied = call(netns, "GET", path, {"Authorization": "Bearer forbidden"},
                      source=next(sources))
        assert denied.status == 403 and json.loads(denied.body)["code"] == "forbidden"
    if backend.streamed:
        assert len(delays) > 1, "the retry interval has jitter"
        # Over the rate limit (one address, one connection): the stream route answers the
        # retry stream where other routes answer 429.
        path = f"/stream/sse/{backend.streamed[0].name}"
        conn = http.client.HTTPConnection("127.0.0.1", 80, timeout=10,
                                          source_address=("127.0.6.250", 0))
        with netns.inside():
            conn.connect()
        try:
            for _ in range(backend.rate_limit.burst * 4 + 10):
                conn.request("GET", path, headers={"Authorization": "Bearer forbidden"})
                reply = conn.getresponse()
                body = reply.read().decode()
                assert reply.status in (200, 403), reply.status
                if reply.status == 200:
                    assert RETRY_ONLY.fullmatch(body).group(2) == "rate limited", body
                    break
                if reply.getheader("Connection", "") == "close":
                    conn.close()
                    with netns.inside():
                        conn.connect()
            else:
                raise AssertionError("never rate limited")
        finally:
            conn.close()


def test_streams_refuse_origins_cors_does_not_allow_before_any_work(gateway, netns, recording):
    """A page on a refused origin could not read the stream: 403 before the permission check
    or a Redis connection. An allowed origin, or none (curl, Arroyo), goes on."""
    backend, _ = gateway
    sources = (f"127.0.5.{n}" for n in itertools.count(1))
    allowed = [o for o in backend.cors.allowed_origins if o != "*"]
    for entity in backend.streamed:
        path = f"/stream/sse/{entity.name}"
        recording.mark()
        reply = call(netns, "GET", path, {"Origin": "https://elsewhere.example"},
                     source=next(sources))
        assert reply.status == 403 and recording.since() == [], entity.name
        assert "https://elsewhere.example is not allowed" in json.loads(reply.body)["message"]
        for headers in ([{"Origin": allowed[0]}] if allowed else []) + [{}]:
            recording.mark()
            call(netns, "GET", path, {**headers, "Authorization": "Bearer x.e30.x"},
                 source=next(sources))
            assert recording.since()[0]["path"] == f"/{entity.name}", headers


def _jwt(claims: dict) -> str:
    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")
    return f"{part({'alg': 'HS256'})}.{part(claims)}.sig"


def _cookie(reply) -> dict[str, str]:
    """The Set-Cookie header as name=value plus its attributes (lower-cased names)."""
    first, *attributes = [part.strip() for part in reply.headers["set-cookie"].split(";")]
    name, _, value = first.partition("=")
    parsed = {"name": name, "value": value}
    for attribute in attributes:
        key, _, val = attribute.partition("=")
        parsed[key.lower()] = val
    return parsed


def test_the_stream_session_cookie_carries_the_token_to_the_stream_routes(gateway, netns,
                                                                          recording):
    """POST /stream/session with a bearer token sets an HttpOnly cookie limited to /stream that
    expires with the token; the stream routes take the token from it when no Authorization
    header comes (the header wins), and it is not passed on to PostgREST. A token in the URL
    is refused before anything is asked or logged."""
    backend, _ = gateway
    sources = (f"127.0.7.{n}" for n in itertools.count(1))
    if not backend.streamed:
        assert call(netns, "POST", "/stream/session").status == 404
        return
    path = f"/stream/sse/{backend.streamed[0].name}"
    expires = int(time.time()) + 600
    token = _jwt({"sub": "u1", "role": "admin", "exp": expires})
    recording.mark()
    reply = call(netns, "POST", "/stream/session", {"Authorization": f"Bearer {token}"},
                 source=next(sources))
    assert reply.status == 204, reply.body
    cookie = _cookie(reply)
    assert (cookie["name"], cookie["value"]) == ("crud_stream_token", token)
    assert cookie["path"] == "/stream" and "httponly" in cookie
    assert cookie["samesite"] == "Lax" and "secure" not in cookie  # plain HTTP
    assert 0 < int(cookie["max-age"]) <= expires - int(time.time()) + 1
    assert reply.headers["cache-control"] == "no-store"
    assert recording.since() == [], "the session endpoint asks PostgREST nothing"
    # Behind a TLS front: usable from a page of another site.
    tls = _cookie(call(netns, "POST", "/stream/session", {
        "Authorization": f"Bearer {token}", "X-Forwarded-Proto": "https"}, source=next(sources)))
    assert "secure" in tls and tls["samesite"] == "None" and "partitioned" in tls
    # Without exp: a cookie for the browser session; an expired or missing token: none.
    forever = _jwt({"sub": "u1", "role": "admin"})
    assert "max-age" not in _cookie(call(netns, "POST", "/stream/session", {
        "Authorization": f"Bearer {forever}"}, source=next(sources)))
    for headers in ({"Authorization": "Bearer " + _jwt({"exp": int(time.time()) - 5})}, {},
                    {"Authorization": "Basic dTpw"}):
        refused = call(netns, "POST", "/stream/session", headers, source=next(sources))
        assert refused.status == 401 and "set-cookie" not in refused.headers, headers
        assert "www-authenticate" in refused.headers
    removed = _cookie(call(netns, "DELETE", "/stream/session", source=next(sources)))
    assert removed["value"] == "" and removed["max-age"] == "0"
    assert removed["path"] == "/stream"
    assert call(netns, "GET", "/stream/session", source=next(sources)).status == 405
    # The stream takes the cookie's token; PostgREST gets it as Authorization, no cookie.
    recording.mark()
    call(netns, "GET", path, {"Cookie": f"other=1; crud_stream_token={token}"},
         source=next(sources))
    probe = recording.since()[0]
    assert probe["headers"]["authorization"] == f"Bearer {token}"
    assert "cookie" not in probe["headers"]
    # The header wins over the cookie (a refused token of this test's own: the per-token
    # rate limit of `forbidden` may be spent by the tests before).
    assert call(netns, "GET", path, {"Cookie": f"crud_stream_token={token}",
                                     "Authorization": "Bearer forbidden.header-wins"},
                source=next(sources)).status == 403
    # ?access_token= on every stream route: refused, nothing asked of PostgREST.
    routes = [path, "/stream/session"] + [r.sse_channel for r in backend.rules
                                          if r.sse_channel]
    for route in routes:
        recording.mark()
        reply = call(netns, "GET", f"{route}?access_token={token}", source=next(sources))
        assert reply.status == 400 and "access_token" in reply.json()["message"], route
        assert recording.since() == [], route
    # CORS with credentials on the stream routes, for origins listed exactly.
    for origin in backend.cors.allowed_origins:
        for method, route in (("OPTIONS", "/stream/session"), ("GET", path)):
            reply = call(netns, method, route, {"Origin": origin, "Authorization":
                         "Bearer forbidden", "Access-Control-Request-Method": "POST"},
                         source=next(sources))
            if origin == "*":
                assert reply.headers["access-control-allow-origin"] == "*"
                assert "access-control-allow-credentials" not in reply.headers
            else:
                assert reply.headers["access-control-allow-origin"] == origin
                assert reply.headers["access-control-allow-credentials"] == "true"
