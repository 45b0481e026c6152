"""The generated Python client, live (part 2 of tests/test_python_client.py): rows
created, read, listed, changed and deleted through the generated gateway on real nginx and
real PostgreSQL — behind a PostgREST stand-in that runs the SQL PostgREST builds
(tests/postgrest_sql.py), since PostgREST itself cannot run here — and their changes
received over SSE from the real relay and Redis through a connection the test cuts: the
subscription resumes with Last-Event-ID and gets every change exactly once. Sync and async.

A module of its own: the gateway of test_python_client.py's module-scoped fixture holds
port 80 until that module ends.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import httpx
import psycopg
import pytest

from . import postgrest_sql as rest
from .support import EXAMPLES_DIR, from_textproto
from .test_python_client import SINGULAR, TIME, install, load

RESERVED_PARAMS = {"select", "order", "limit", "offset", "columns"}
_OPS = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def _list_items(text: str) -> list[str]:
    """The elements of PostgREST's `(a,"b,c")` list."""
    items, current, quoted, escaped, was_quoted = [], "", False, False, False
    for ch in text[1:-1]:
        if escaped:
            current, escaped = current + ch, False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted, was_quoted = not quoted, True
        elif ch == "," and not quoted:
            items.append(current)
            current, was_quoted = "", False
        else:
            current += ch
    if current or was_quoted:
        items.append(current)
    return items


class PostgrestOnPostgres(ThreadingHTTPServer):
    """A PostgREST stand-in that runs PostgREST's SQL (tests/postgrest_sql) on the real
    database, for what the client sends: filters (eq, neq, gt, gte, lt, lte, in, is), order,
    limit/offset with `Prefer: count=exact`, inserts (?columns=, missing=default), PATCH,
    PUT and DELETE by key, singular answers, and /rpc/ calls. Requests run as the token's
    role with its claims, as PostgREST runs them (the signature is not checked here)."""

    daemon_threads = True

    def __init__(self, dsn: str, schema: str):
        super().__init__(("127.0.0.1", 0), _PostgrestHandler)
        self.dsn, self.schema = dsn, schema
        self.shapes: dict[str, rest.TableShape] = {}

    def shape(self, conn: psycopg.Connection, table: str) -> rest.TableShape:
        if table not in self.shapes:
            self.shapes[table] = rest.shape(conn, self.schema, table)
        return self.shapes[table]

    def where(self, s: rest.TableShape, filters: list[tuple[str, str]]) -> tuple[str, list]:
        terms, params = [], []
        for column, text in filters:
            negated = text.startswith("not.")
            op, _, value = text.removeprefix("not.").partition(".")
            name = f"{s.qualified}.{rest.ident(column)}"
            cast = s.columns[column]
            if op == "is":
                term = f"{name} IS {'NULL' if value == 'null' else value.upper()}"
            elif op == "in":
                items = _list_items(value)
                term = f"{name} IN ({', '.join(f'%s::{cast}' for _ in items)})"
                params += items
            elif op in ("like", "ilike"):
                term = f"{name} {op.upper()} %s"
                params.append(value.replace("*", "%"))
            else:
                term = f"{name} {_OPS[op]} %s::{cast}"
                params.append(value)
            terms.append(f"NOT ({term})" if negated else term)
        return (" WHERE " + " AND ".join(terms) if terms else ""), params

    def run(self, method: str, path: str, pairs: list[tuple[str, str]], prefer: set[str],
            body: Any, claims: dict) -> tuple[int, str, dict[str, str]]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            table = path.removeprefix("rpc/")
            s = None if path.startswith("rpc/") else self.shape(conn, table)
            with conn.transaction():
                role = claims.get("role") or ("authenticated" if claims.get("sub") else "anon")
                conn.execute("SELECT set_config('role', %s, true)", (role,))
                conn.execute("SELECT set_config('request.jwt.claims', %s, true)",
                             (json.dumps(claims),))
                if s is None:
                    arguments = body if method == "POST" else dict(pairs)
                    call = ", ".join(f"{rest.ident(k)} := %s" for k in arguments)
                    sql = (f"SELECT coalesce(json_agg(_t), '[]')::text FROM "
                           f"{rest.ident(self.schema)}.{rest.ident(table)}({call}) _t")
                    return 200, conn.execute(sql, list(arguments.values())).fetchone()[0], {}
                options = dict(pairs)
                filters = [(k, v) for k, v in pairs if k not in RESERVED_PARAMS]
                where, params = self.where(s, filters)
                if method == "GET":
                    rows = f"SELECT {s.qualified}.* FROM {s.qualified}{where}"
                    if "order" in options:
                        terms = []
                        for term in options["order"].split(","):
                            column, *rest_ = term.split(".")
                            words = {"asc": "ASC", "desc": "DESC", "nullsfirst": "NULLS FIRST",
                                     "nullslast": "NULLS LAST"}
                            terms.append(" ".join([rest.ident(column),
                                                   *(words[w] for w in rest_)]))
                        rows += " ORDER BY " + ", ".join(terms)
                    rows += f" LIMIT {int(options['limit'])}" if "limit" in options else ""
                    rows += f" OFFSET {int(options['offset'])}" if "offset" in options else ""
                    text = conn.execute(rest._body(s, rows, "pgrst_source"), params).fetchone()[0]
                    headers = {}
                    if "count=exact" in prefer:
                        total = conn.execute(f"SELECT count(*) FROM {s.qualified}{where}",
                                             params).fetchone()[0]
                        got = len(json.loads(text))
                        first = int(options.get("offset", 0))
                        span = f"{first}-{first + got - 1}" if got else "*"
                        headers["Content-Range"] = f"{span}/{total}"
                    return 200, text, headers
                if method == "POST":
                    columns = options["columns"].split(",") if "columns" in options else None
                    sql, args = rest.insert(s, body, columns, "missing=default" in prefer)
                    return 201, conn.execute(sql, args).fetchone()[0], {}
                (key, text), = filters
                value = text.removeprefix("eq.")
                if method == "PATCH":
                    sql, args = rest.update(s, body, key, value)
                elif method == "PUT":
                    sql, args = rest.upsert(s, body, key)
                else:
                    rows = f"DELETE FROM {s.qualified}{where} RETURNING {s.qualified}.*"
                    sql, args = rest._body(s, rows, "pgrst_source"), tuple(params)
                return 200, conn.execute(sql, args).fetchone()[0], {}


class _PostgrestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: PostgrestOnPostgres

    def handle_any(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        pairs = parse_qsl(url.query, keep_blank_values=True)
        prefer = {p.strip() for p in (self.headers.get("Prefer") or "").split(",") if p}
        token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
        claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "==")) \
            if token.count(".") == 2 else {}
        headers: dict[str, str] = {}
        try:
            status, text, headers = self.server.run(
                self.command, unquote(url.path).lstrip("/"), pairs, prefer,
                json.loads(raw) if raw else None, claims)
        except rest.ColumnNotFound as error:
            status, text = 400, json.dumps({"code": "PGRST204", "message": str(error),
                                            "details": None, "hint": None})
        except psycopg.Error as error:
            status = {"23505": 409, "23503": 409, "42501": 403}.get(error.sqlstate, 400)
            text = json.dumps({"code": error.sqlstate, "message": error.diag.message_primary,
                               "details": error.diag.message_detail,
                               "hint": error.diag.message_hint})
        if status < 300 and self.headers.get("Accept") == SINGULAR:
            rows = json.loads(text)
            if len(rows) != 1:
                status, text = 406, json.dumps({
                    "code": "PGRST116", "details": f"The result contains {len(rows)} rows",
                    "hint": None, "message": "JSON object requested, multiple (or no) rows "
                                             "returned"})
            else:
                text = json.dumps(rows[0])
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = handle_any

    def log_message(self, *args) -> None:
        pass


class CuttableProxy:
    """A TCP relay in front of the gateway that the test can cut: every open connection is
    shut down, and new ones are closed as soon as they arrive until `resume()`. It keeps
    the first bytes of each request (the headers) to show what the client sent."""

    def __init__(self, target: int = 80):
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.holding = False
        self.open: list[socket.socket] = []
        self.requests: list[str] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            if self.holding:
                conn.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self.lock:
                self.open += [conn, upstream]
            threading.Thread(target=self._pipe, args=(conn, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, conn, False),
                             daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, record: bool) -> None:
        try:
            while data := source.recv(65536):
                if record:
                    self.requests.append(data.decode(errors="replace"))
                    record = False
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.holding = True
        with self.lock:
            for sock in self.open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            self.open.clear()

    def resume(self) -> None:
        self.holding = False

    def close(self) -> None:
        self.cut()
        self.listener.close()


def jwt(claims: dict) -> str:
    """An unsigned JWT-shaped token: the stand-in reads its claims, as does the gateway."""
    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")
    return f"{part({'alg': 'HS256'})}.{part(claims)}.signature"


ADMIN = jwt({"sub": "root", "role": "admin"})
ALICE = jwt({"sub": "alice"})


@pytest.fixture
def live(make_stack, pg, tmp_path) -> Iterator[tuple[Any, CuttableProxy]]:
    """The storefront backend running: migrations on PostgreSQL, the relay, Redis, the
    gateway on nginx in front of PostgrestOnPostgres; its client installed with pip."""
    database = f"pyclient_{os.getpid()}_{next(_databases)}"
    server = PostgrestOnPostgres(pg.dsn(database), "shop")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    files = from_textproto(EXAMPLES_DIR / "storefront" / "storefront.textproto")
    conf = files["openresty/nginx.conf"]
    assert conf.count("server crud:3000;") == 1
    files["openresty/nginx.conf"] = conf.replace("server crud:3000;",
                                                 f"server 127.0.0.1:{server.server_port};")
    package, site = install({k: v for k, v in files.items() if k.startswith("clients/")},
                            tmp_path)
    make_stack(files, database, env={"CRUD_SSE_HEARTBEAT_MS": "500"})
    proxy = CuttableProxy()
    try:
        yield load(package, site), proxy
    finally:
        proxy.close()
        server.shutdown()


_databases = iter(range(1_000_000))


def wait_for(predicate: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def check_crud(pkg: Any, api: Any, user: Any) -> None:
    """Create, read, list, change and delete rows of every kind of column through the
    gateway; the answers are PostgreSQL's rows in the wire contract's JSON."""
    C, m = pkg.columns, pkg.models
    value = m.Product.from_dict({"attributes": {"size": [1, "xl"]}}).attributes
    lamp = api.product.create(m.Product(sku="T-1", name="Lamp", price="10.5", cost="4",
                                        category="Lamps", attributes=value,
                                        tags=["a b", "c"], stock=2))
    assert uuid.UUID(lamp.id) and lamp.price == "10.50" and lamp.category == "Lamps"
    assert lamp.tags == ["a b", "c"] and lamp.active is True  # the column's default
    assert lamp.to_dict()["attributes"] == {"size": [1, "xl"]}
    assert isinstance(lamp.created_at, datetime.datetime) and lamp.created_at.tzinfo
    assert api.product.get(lamp.id) == lamp
    two, three = api.product.create_many([
        m.Product(sku="T-2", name="B", price="1", cost="1"),
        m.Product(sku="T-3", name="C", price="2", cost="1", category="Books", stock=9)])
    assert (two.category, two.stock, three.category, three.stock) == (None, 0, "Books", 9)
    page = api.product.list(C.Product.sku.in_(["T-1", "T-2", "T-3"]), C.Product.stock.gte(0),
                            order=C.Product.sku.desc(), limit=2, offset=1, count=True)
    assert ([p.sku for p in page], page.total) == (["T-2", "T-1"], 3)
    assert [p.sku for p in api.product.list(C.Product.category.is_null(),
                                            C.Product.sku.like("T-*"))] == ["T-2"]
    changed = api.product.update(lamp.id, m.Product(price="12"),
                                 fields=[C.Product.category, C.Product.stock])
    assert (changed.price, changed.category, changed.stock, changed.name) == (
        "12.00", None, 0, "Lamp")
    assert changed.updated_at > lamp.updated_at
    with pytest.raises(pkg.Conflict) as caught:
        api.product.create(m.Product(sku="T-1", name="again", price="1", cost="1"))
    assert caught.value.code == "23505"
    rows = api.endpoints.products_restock(sku="T-3", amount=5)
    assert rows == [{"sku": "T-3", "stock": 14}]
    assert api.product.delete(two.id) == two
    with pytest.raises(pkg.NotFound):
        api.product.get(two.id)
    item = user.order_items.create(m.OrderItems(product_id=lamp.id, quantity=2, price="3.5",
                                               shipped_at=TIME))
    assert isinstance(item.id, int) and item.shipped_at == TIME and item.price == "3.50"
    assert user.order_items.get(item.id) == item
    # A custom endpoint's rows: a wire domain's column as its string, a count as a number.
    trending = {row["sku"]: row for row in user.endpoints.products_trending()}
    assert (trending["T-1"]["price"], trending["T-1"]["order_count"]) == ("12.00", 1)
    with pytest.raises(pkg.Forbidden) as caught:  # only authenticated users may create them
        api.order_items.create(m.OrderItems(product_id=lamp.id, quantity=1, price="1"))
    assert caught.value.code == "42501"
    check_rules(pkg, api)


def check_rules(pkg: Any, api: Any) -> None:
    """The entity's rules: the client refuses a row that breaks them before sending it,
    naming every broken rule's field; with its checks off, the database refuses the same
    rows and the refusal comes back typed, naming the field (its CHECK's or NOT NULL's)."""
    m = pkg.models
    before = api.product.list(count=True).total
    with pytest.raises(pkg.InvalidMessage) as caught:
        # name "" (min_length 1), price -1 (min 0 and price >= cost), stock -1 (min 0)
        api.product.create(m.Product(sku="R-1", name="", price="-1", cost="2", stock=-1))
    broken = sorted((v.field, v.constraint) for v in caught.value.violations)
    assert broken == [("name", "product_name_min_length"), ("price", "product_price_check"),
                      ("price", "product_price_min"), ("stock", "product_stock_min")]
    with pytest.raises(pkg.InvalidMessage) as caught:  # price unset: a decimal has no zero
        api.product.create(m.Product(sku="R-1", name="N", cost="2"))
    assert [(v.field, v.rule) for v in caught.value.violations] == [("price", "NOT NULL")]
    lamp = api.product.list(pkg.columns.Product.sku.eq("T-1")).items[0]
    with pytest.raises(pkg.InvalidMessage) as caught:  # a change checks what it changes
        api.product.update(lamp.id, m.Product(stock=-3))
    assert caught.value.fields == ["stock"]
    assert api.product.list(count=True).total == before  # nothing was sent
    raw = pkg.Client(api.session.base_url, token=api.session.token, http=api.session.http,
                     check_rules=False)
    with pytest.raises(pkg.CheckViolation) as refused:
        raw.product.create(m.Product(sku="R-1", name="N", price="-1", cost="-5"))
    assert (refused.value.status, refused.value.code, refused.value.field,
            refused.value.constraint) == (400, "23514", "price", "product_price_min")
    with pytest.raises(pkg.CheckViolation) as refused:
        raw.product.update(lamp.id, m.Product(stock=-3))
    assert (refused.value.field, refused.value.constraint) == ("stock", "product_stock_min")
    with pytest.raises(pkg.NotNullViolation) as missing:
        raw.product.create(m.Product(sku="R-1", name="N", cost="2"))
    assert (missing.value.code, missing.value.field) == ("23502", "price")
    assert api.product.list(count=True).total == before


@pytest.mark.one_major
def test_live_sync(live):
    pkg, proxy = live
    http = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.21"))
    api = pkg.Client("http://127.0.0.1", token=ADMIN, http=http)
    user = pkg.Client("http://127.0.0.1", token=ALICE, http=http)
    stream = pkg.Client(f"http://127.0.0.1:{proxy.port}", token=ALICE)
    events: list[Any] = []

    def consume() -> None:
        with contextlib.suppress(httpx.TransportError):
            for change in stream.customer.subscribe(history="all", retry_delay=0.2,
                                                    read_timeout=5, max_retries=50):
                events.append(change)

    threading.Thread(target=consume, daemon=True).start()
    # A second subscription with the filters the gateway's streams take.
    filtered: list[Any] = []

    def consume_filtered() -> None:
        with contextlib.suppress(httpx.TransportError):
            for change in stream.customer.subscribe(pkg.columns.Customer.email.eq("c@x.io"),
                                                    actions=("I",), history="all",
                                                    read_timeout=5, max_retries=50):
                filtered.append(change)

    threading.Thread(target=consume_filtered, daemon=True).start()
    m = pkg.models
    first = user.customer.create(m.Customer(email="a@x.io", name="A"))
    second = user.customer.create(m.Customer(email="b@x.io", name="B"))
    assert (first.tier, first.user_id) == (m.CustomerTier.BASIC, "alice")
    wait_for(lambda: len(events) >= 2)
    proxy.cut()  # the subscription's connection drops; reconnecting fails for a while
    third = user.customer.create(m.Customer(email="c@x.io", name="C",
                                            tier=m.CustomerTier.GOLD))
    renamed = user.customer.update(first.id, m.Customer(name="A2"))
    gone = api.customer.delete(second.id)
    time.sleep(1)
    proxy.resume()
    wait_for(lambda: len(events) >= 5)
    check_resumed(events, proxy, [("I", first, None), ("I", second, None),
                                  ("I", third, None), ("U", renamed, first),
                                  ("D", gone, second)])
    wait_for(lambda: len(filtered) >= 1)
    time.sleep(0.5)
    assert [(c.action, c.row) for c in filtered] == [("I", third)]
    check_crud(pkg, api, user)


def check_resumed(events: list[Any], proxy: CuttableProxy, expected: list) -> None:
    time.sleep(1)  # nothing more comes: no change twice
    assert len(events) == len(expected)
    for change, (action, row, old) in zip(events, expected, strict=True):
        assert (change.action, change.row) == (action, row)
        if old is not None:
            assert change.old == old
    ids = [tuple(map(int, e.id.split("-"))) for e in events]
    assert ids == sorted(set(ids))
    headers = [r.lower() for r in proxy.requests if r.startswith("GET /stream/sse/")]
    assert "history=all" in headers[0] and "last-event-id" not in headers[0]
    resumed = [h for h in headers if f"last-event-id: {events[1].id}" in h]
    assert resumed and "history" not in resumed[-1].split("\r\n")[0]


@pytest.mark.one_major
def test_live_async(live):
    pkg, proxy = live

    async def run() -> None:
        http = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address="127.0.0.22"))
        user = pkg.AsyncClient("http://127.0.0.1", token=ALICE, http=http)
        admin = pkg.AsyncClient("http://127.0.0.1", token=ADMIN, http=http)
        events: list[Any] = []

        async def consume() -> None:
            async with pkg.AsyncClient(f"http://127.0.0.1:{proxy.port}", token=ALICE) as api:
                async for change in api.customer.subscribe(history="all", retry_delay=0.2,
                                                           read_timeout=5):
                    events.append(change)

        async def until(count: int) -> None:
            deadline = time.monotonic() + 15
            while len(events) < count:
                assert time.monotonic() < deadline, events
                await asyncio.sleep(0.05)

        task = asyncio.create_task(consume())
        m = pkg.models
        first = await user.customer.create(m.Customer(email="a@x.io", name="A"))
        second = await user.customer.create(m.Customer(email="b@x.io", name="B"))
        await until(2)
        proxy.cut()
        third = await user.customer.create(m.Customer(email="c@x.io", name="C"))
        renamed = await user.customer.update(first.id, m.Customer(name="A2"))
        gone = await admin.customer.delete(second.id)
        await asyncio.sleep(1)
        proxy.resume()
        await until(5)
        await asyncio.sleep(1)
        task.cancel()
        check_resumed(events, proxy, [("I", first, None), ("I", second, None),
                                      ("I", third, None), ("U", renamed, first),
                                      ("D", gone, second)])
        page = await admin.product.list(C_sku(pkg).like("*"), count=True, limit=1)
        assert page.total is not None and page.total >= 1 and len(page) == 1
        await http.aclose()

    asyncio.run(run())


def C_sku(pkg: Any) -> Any:
    return pkg.columns.Product.sku
