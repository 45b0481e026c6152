"""`make dev`: the local run regenerates on an edit of the .proto and applies only the
difference; the change shows in the database and on the SSE stream while PostgreSQL, the
relay and the gateway's master keep running."""

from __future__ import annotations

import os
import shutil
import time

import psycopg

from protoc_gen_crud.devloop import DevLoop, difference

from .support import EXAMPLES_DIR, call
from .test_realtime import ADMIN, SseClient, token


def test_difference_names_the_parts_to_reload():
    old = {"migrations/0100_a.sql": "x", "openresty/nginx.conf": "y", "relay/relay.json": "z"}
    assert difference(old, dict(old)).files == ()
    change = difference(old, {**old, "migrations/0100_a.sql": "x2"})
    assert (change.migrations, change.gateway, change.relay) == (True, False, False)
    change = difference(old, {**old, "openresty/lua/crud_gateway.lua": "new"})
    assert (change.migrations, change.gateway, change.relay) == (False, True, False)


def test_editing_the_proto_reaches_database_and_stream(test_host, pg, redis_server, recording,
                                                       tmp_path):
    """PostgREST is the stand-in of the other tests (recording), as no binary exists here."""
    source = tmp_path / "src" / "product.proto"
    source.parent.mkdir()
    shutil.copy(EXAMPLES_DIR / "product" / "product.proto", source)
    loop = DevLoop(source, tmp_path / "generated", test_host, pg, redis_server, "dev_loop")
    loop.start()
    try:
        stack = loop.stack
        relay_pid, gateway_pid = stack.relay.process.pid, stack.gateway.process.pid
        postmaster = pg.run_psql("postgres", "-Atc", "SELECT pg_postmaster_start_time()").stdout
        client = SseClient("/stream/sse/product")
        assert client.status == 200
        # The reference page, with Swagger UI from scripts/setup.sh's npm install.
        assert call(test_host, "GET", "/api/v1/docs").status == 200
        asset = call(test_host, "GET", "/api/v1/docs/assets/swagger-ui-bundle.js")
        assert asset.status == 200 and b"SwaggerUIBundle" in asset.body

        text = source.read_text()
        last_brace = text.rstrip().rfind("}")
        number = 1 + max(int(n) for n in __import__("re").findall(r"= (\d+)[;\s\[]", text))
        source.write_text(text[:last_brace] + f"  optional string colour = {number};\n}}\n")
        os.utime(source, (time.time() + 5, time.time() + 5))
        change = loop.poll()
        assert change is not None and change.migrations, change
        # The page's README lists the new column once the gateway's new workers answer
        # (`nginx -s reload` returns before they start).
        deadline = time.monotonic() + 10
        while b"colour" not in call(test_host, "GET", "/api/v1/docs/README.md").body:
            assert time.monotonic() < deadline, "the reloaded gateway serves the old README"
            time.sleep(0.1)

        with psycopg.connect(pg.dsn("dev_loop"), autocommit=True) as conn:
            columns = {r[0] for r in conn.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = 'product'").fetchall()}
            assert "colour" in columns
            conn.execute("INSERT INTO product (name, price, colour) VALUES ('Pen', 2, 'blue')")
        got = client.events(1, timeout=10)
        client.close()
        if not got:
            # The reload ended the stream on the old worker (within a second, issue 16): as
            # an EventSource does, reconnect with the last id, to the new workers.
            assert client.closed and client.last_id
            again = SseClient("/stream/sse/product", {"Last-Event-ID": client.last_id,
                                                      "Authorization": f"Bearer {token(ADMIN)}"})
            got = again.events(1, timeout=10)
            again.close()
        (event,) = got
        assert event[1]["colour"] == "blue" and event[1]["action"] == "I"

        assert stack.relay.process.pid == relay_pid and stack.relay.process.poll() is None
        assert stack.gateway.process.pid == gateway_pid
        assert pg.run_psql("postgres", "-Atc",
                           "SELECT pg_postmaster_start_time()").stdout == postmaster

        # A mistake is reported and changes nothing.
        before = dict(loop.files)
        source.write_text(source.read_text().replace("optional string colour",
                                                     "optional strin colour"))
        os.utime(source, (time.time() + 10, time.time() + 10))
        assert loop.poll() is None and loop.files == before
    finally:
        loop.stop()
