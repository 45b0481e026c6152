"""The generated Python client (`clients/python/`): installed with pip from the generated
folder, then used the way a team would use it.

1. Through the generated gateway on real nginx to the recording PostgREST stand-in: every
   call's upstream request (method, path, query, Prefer, Authorization, JSON body) must be
   the PostgREST request it stands for. The expected requests are written here from
   PostgREST's documented query syntax (`col=op.value`, `in.("a,b",c)`, `order=col.desc`,
   `limit`/`offset`, `Prefer: count=exact`, `?columns=` with `missing=default`) and the
   wire contract's JSON, not read from the client. Sync and async alike.
2. Live: rows created, read, listed, changed and deleted through the gateway on real
   PostgreSQL (behind a PostgREST stand-in that runs PostgREST's SQL, tests/postgrest_sql),
   and their changes received over SSE from the real relay and Redis, through a connection
   the test cuts: the subscription resumes with Last-Event-ID and gets every change once.
3. mypy --strict over a usage file: it passes, and a misspelt field or a value of the wrong
   type fails.
"""

from __future__ import annotations

import asyncio
import datetime
import importlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import betterproto2
import httpx
import pytest

from protoc_gen_crud.model import Backend, Column, Entity

from .support import EXAMPLES, EXAMPLES_DIR, from_text, from_textproto, model_of, serving_gateway

SINGULAR = "application/vnd.pgrst.object+json"
UTC = datetime.UTC


def install(files: dict[str, str], folder: Path) -> tuple[str, Path]:
    """Write the generated tree, `pip install` its clients/python into a folder of its own
    and import the package from there. Returns the package's name and that folder."""
    for rel, text in files.items():
        target = folder / "generated" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    site = folder / "site"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
         "--no-build-isolation", "--target", str(site),
         str(folder / "generated" / "clients" / "python")],
        capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return next(p.name for p in site.iterdir() if p.name.endswith("_client")), site


def load(name: str, site: Path) -> Any:
    """Import the installed package (another example's package of the same name is
    dropped from sys.modules first)."""
    for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[module]
    sys.path.insert(0, str(site))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(site))


# --- values of each column kind, and their forms on the wire and in filters -----------------
# Written from the wire contract (README) and PostgREST's query syntax, not from the client.

TIME = datetime.datetime(2026, 2, 3, 4, 5, 6, tzinfo=UTC)
TEXT = "a b,c"  # a space and a comma: an in.(...) list must quote it


def sample(entity: Entity, column: Column, pkg: Any) -> tuple[Any, Any, str]:
    """(Python value, its JSON on the wire, its text in a filter) for one column."""
    enums = {c.column: c.values for c in entity.checks if c.kind == "enum"}
    array = column.sql_type.endswith("]")
    if column.name in enums:
        cls = getattr(pkg.models, type_name(entity) + camel(column.name))
        name = enums[column.name][1]
        member = next(m for m in cls if (m.proto_name or m.name) == name)
        return member, name, name
    kind = column.kind
    if array:
        assert kind == "TEXT", kind
        return ["a b", "c"], ["a b", "c"], '{"a b",c}'
    if kind == "UUID":
        value = "7d0c2b58-0b39-4b0c-9f0e-5a3f3c1f4e11"
        return value, value, value
    if kind == "TEXT":
        return TEXT, TEXT, TEXT
    if kind == "DECIMAL":
        return "10.50", "10.50", "10.50"
    if kind in ("INTEGER", "SMALLINT", "SERIAL"):
        return 42, 42, "42"
    if kind in ("BIGINT", "BIGSERIAL"):
        return 9007199254740993, "9007199254740993", "9007199254740993"
    if kind in ("REAL", "DOUBLE"):
        return 1.5, 1.5, "1.5"
    if kind == "BOOLEAN":
        return True, True, "true"
    if kind == "TIMESTAMPTZ":
        return TIME, "2026-02-03T04:05:06Z", "2026-02-03T04:05:06Z"
    if kind in ("JSON", "JSONB"):
        return None, {"k": [1, "x"]}, '{"k":[1,"x"]}'
    raise AssertionError(f"no sample for {kind}")


def zero_wire(entity: Entity, column: Column) -> Any:
    """A field's JSON at its zero value, as a proto3 writer that prints zero values writes
    it: null for explicit presence (optional, messages), else the type's zero."""
    enums = {c.column: c.values for c in entity.checks if c.kind == "enum"}
    if column.sql_type.endswith("]"):
        return []
    if column.nullable or column.kind in ("TIMESTAMPTZ", "INTERVAL", "JSON", "JSONB"):
        return None
    if column.name in enums:
        return enums[column.name][0]
    return {"INTEGER": 0, "SMALLINT": 0, "SERIAL": 0, "BIGINT": "0", "BIGSERIAL": "0",
            "REAL": 0.0, "DOUBLE": 0.0, "BOOLEAN": False}.get(column.kind, "")


def camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def type_name(entity: Entity) -> str:
    return camel(entity.name)


def build(entity: Entity, pkg: Any, columns: list[Column]) -> tuple[Any, dict[str, Any]]:
    """A model with a sample in each given column, and the JSON body it must become."""
    model = getattr(pkg.models, type_name(entity))
    kwargs, wire, json_fields = {}, {}, {}
    for column in columns:
        value, on_wire, _ = sample(entity, column, pkg)
        wire[column.name] = on_wire
        if column.kind in ("JSON", "JSONB"):
            json_fields[column.name] = on_wire
        else:
            kwargs[column.name] = value
    item = model(**kwargs)
    for name, value in json_fields.items():  # a google.protobuf.Value, parsed from its JSON
        setattr(item, name, model.from_dict({name: value}).__getattribute__(name))
    return item, wire


_ZERO_IS_A_VALUE = {"TEXT", "INTEGER", "SMALLINT", "BIGINT", "SERIAL", "BIGSERIAL", "REAL",
                    "DOUBLE", "BOOLEAN", "BYTEA"}


def new_row(entity: Entity, body: dict[str, Any]) -> dict[str, Any]:
    """The body of a new row: the fields set, then each NOT NULL field without a default
    (not a key) at its zero value where that is a value of the column. proto3 leaves zero
    values out, and a column without a default would store NULL and refuse the row."""
    out = dict(body)
    for column in entity.columns:
        if (not column.nullable and column.default is None and not column.identity
                and column.name not in entity.primary_key
                and column.name != entity.access.tenant_column
                and (column.sql_type.endswith("]") or column.kind in _ZERO_IS_A_VALUE)):
            out.setdefault(column.name, zero_wire(entity, column))
    return out


# --- 1. through the gateway to the recording stand-in ---------------------------------------

@pytest.fixture(scope="module", params=EXAMPLES)
def through_gateway(request, test_host, recording, tmp_path_factory):
    name = request.param
    folder = tmp_path_factory.mktemp(f"client-{name}")
    files = from_textproto(EXAMPLES_DIR / name / f"{name}.textproto",
                           ["openresty", "python_client"])
    package, site = install(files, folder)
    with serving_gateway(test_host, folder / "generated" / "openresty"):
        yield model_of(name), load(package, site)


class Expect:
    """One expected PostgREST request."""

    def __init__(self, method: str, path: str, query: list[tuple[str, str]],
                 prefer: str | None = None, body: Any = None, singular: bool = False):
        self.method, self.path, self.query = method, path, query
        self.prefer, self.body, self.singular = prefer, body, singular

    def check(self, seen: dict, token: str) -> None:
        assert (seen["method"], seen["path"]) == (self.method, self.path), seen
        assert parse_qsl(seen["query"], keep_blank_values=True) == self.query, seen["query"]
        assert "+" not in seen["query"], "a + would be read as a space"
        assert seen["headers"].get("prefer") == self.prefer, seen["headers"]
        assert seen["headers"]["authorization"] == f"Bearer {token}"
        assert (seen["headers"].get("accept") == SINGULAR) == self.singular
        if self.body is None:
            assert seen["body"] == ""
        else:
            assert seen["headers"]["content-type"] == "application/json"
            assert json.loads(seen["body"]) == self.body


def calling(path: str, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
    """A call of the client's `path` (e.g. "product.list") with these arguments."""
    def call(client: Any) -> Any:
        target = client
        for part in path.split("."):
            target = getattr(target, part)
        return target(*args, **kwargs)
    return call


def scenario(backend: Backend, pkg: Any) -> list[tuple[Callable[[Any], Any], Expect]]:
    """Calls of the client and the PostgREST request each must reach the stand-in as."""
    steps: list[tuple[Callable[[Any], Any], Expect]] = []
    for entity in backend.entities:
        table = f"/{entity.name}"
        attr = entity.name
        cols = getattr(pkg.columns, type_name(entity))
        filterable = [c for c in entity.columns if c.kind not in ("JSON", "JSONB")]
        # Every column with eq, in the order given; then the other operators.
        filters, expected = [], []
        for column in filterable:
            value, _, text = sample(entity, column, pkg)
            filters.append(getattr(cols, column.name).eq(value))
            expected.append((column.name, f"eq.{text}"))
        first = filterable[1]
        value, _, text = sample(entity, first, pkg)
        column = getattr(cols, first.name)
        more = [column.neq(value), column.gte(value), column.lt(value), ~column.eq(value),
                column.is_null(), column.in_([value, value])]
        quoted = f'"{text}"' if any(ch in text for ch in ',() "') else text
        expected += [(first.name, f"neq.{text}"), (first.name, f"gte.{text}"),
                     (first.name, f"lt.{text}"), (first.name, f"not.eq.{text}"),
                     (first.name, "is.null"), (first.name, f"in.({quoted},{quoted})")]
        order = [column.desc(nulls="last"), getattr(cols, filterable[0].name).asc()]
        steps.append((
            calling(f"{attr}.list", *filters, *more, order=order, limit=10, offset=20,
                    count=True),
            Expect("GET", table, expected + [
                ("order", f"{first.name}.desc.nullslast,{filterable[0].name}.asc"),
                ("limit", "10"), ("offset", "20")], prefer="count=exact")))
        text_columns = [c for c in entity.columns if c.kind == "TEXT"
                        and not c.sql_type.endswith("]")
                        and c.name not in {k.column for k in entity.checks if k.kind == "enum"}]
        if text_columns:
            like = getattr(cols, text_columns[0].name)
            steps.append((
                calling(f"{attr}.list", like.ilike("*lap top*"), select=[like]),
                Expect("GET", table, [(text_columns[0].name, "ilike.*lap top*"),
                                      ("select", text_columns[0].name)])))
        writable = [c for c in entity.columns if not c.implicit and not c.identity]
        item, body = build(entity, pkg, writable)
        steps.append((calling(f"{attr}.create", item),
                      Expect("POST", table, [], "return=representation", new_row(entity, body))))
        # Two rows leaving out different fields: ?columns= names them all, missing=default.
        left, right = writable[:2], writable[1:3]
        one, body_one = build(entity, pkg, left)
        two, body_two = build(entity, pkg, right)
        body_one, body_two = new_row(entity, body_one), new_row(entity, body_two)
        names = list(dict.fromkeys([*body_one, *body_two]))
        steps.append((calling(f"{attr}.create_many", (one, two)),
                      Expect("POST", table, [("columns", ",".join(names))],
                             "return=representation,missing=default", [body_one, body_two])))
        if len(entity.primary_key) != 1:
            continue
        key_column = entity.column(entity.primary_key[0])
        key, _, key_text = sample(entity, key_column, pkg)
        item_query = [(key_column.name, f"eq.{key_text}")]
        steps.append((calling(f"{attr}.get", key),
                      Expect("GET", table, item_query, "return=representation",
                             singular=True)))
        # PATCH: the fields set, plus one named to go out at its zero value / NULL.
        change_column = writable[-1]
        changes, change_body = build(entity, pkg, [writable[0]])
        change_body[change_column.name] = zero_wire(entity, change_column)
        steps.append((
            calling(f"{attr}.update", key, changes,
                    fields=[getattr(cols, change_column.name)]),
            Expect("PATCH", table, item_query, "return=representation", change_body,
                   singular=True)))
        # PUT: every field, zero values included, unset optional fields as null.
        replaced, _ = build(entity, pkg, [key_column])
        put_body = {c.name: zero_wire(entity, c) for c in entity.columns
                    if not (c.implicit and c.name in ("created_at", "updated_at"))}
        put_body[key_column.name] = sample(entity, key_column, pkg)[1]
        steps.append((calling(f"{attr}.replace", replaced),
                      Expect("PUT", table, item_query, "return=representation", put_body,
                             singular=True)))
        steps.append((calling(f"{attr}.delete", key),
                      Expect("DELETE", table, item_query, "return=representation",
                             singular=True)))
        steps.append((
            calling(f"{attr}.delete_where", filters[1]),
            Expect("DELETE", table, [expected[1]], "return=representation")))
        steps.append((
            calling(f"{attr}.update_where", changes, filters[1]),
            Expect("PATCH", table, [expected[1]], "return=representation",
                   build(entity, pkg, [writable[0]])[1])))
    for endpoint in backend.endpoints:
        sql_values = {"text": ("rust, go", "rust, go", "rust, go"), "integer": (5, 5, "5")}
        args = {p.name: sql_values[p.sql_type] for p in endpoint.params}
        call = calling(f"endpoints.{endpoint.function}", **{k: v[0] for k, v in args.items()})
        if endpoint.method == "GET":
            steps.append((call, Expect("GET", f"/rpc/{endpoint.function}",
                                       [(k, v[2]) for k, v in args.items()])))
        else:
            steps.append((call, Expect("POST", f"/rpc/{endpoint.function}", [],
                                       body={k: v[1] for k, v in args.items()})))
    return steps


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_requests_are_the_postgrest_requests_they_stand_for(through_gateway, recording, mode):
    backend, pkg = through_gateway
    steps = scenario(backend, pkg)
    token = f"token-{mode}"
    seen: list[dict] = []
    # A source address per test: the gateway's rate limit counts per client address.
    address = {"sync": "127.0.0.11", "async": "127.0.0.12"}[mode]
    # The messages set only the fields each step is about, which may break the entity's
    # rules: the client's own checks are off here (tests/test_client_rules.py has them).
    if mode == "sync":
        http = httpx.Client(transport=httpx.HTTPTransport(local_address=address))
        with pkg.Client("http://127.0.0.1", token=token, http=http,
                        check_rules=False) as client:
            for call, _ in steps:
                recording.mark()
                call(client)
                seen.append(recording.one())
    else:
        async def run() -> None:
            http = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address=address))
            async with pkg.AsyncClient("http://127.0.0.1", token=lambda: token,
                                       http=http, check_rules=False) as client:
                for call, _ in steps:
                    recording.mark()
                    await call(client)
                    seen.append(recording.one())
        asyncio.run(run())
    assert len(seen) == len(steps) > 5
    for (_, expect), request in zip(steps, seen, strict=True):
        expect.check(request, token)


def test_gateway_and_postgrest_errors_are_typed(through_gateway, recording):
    backend, pkg = through_gateway
    entity = next(e for e in backend.entities if len(e.primary_key) == 1)
    attr = entity.name

    def http() -> httpx.Client:
        return httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.13"))

    # The 413 body breaks no gateway rule but may break the entity's own (a length limit):
    # the client's checks are off, so the request reaches the gateway.
    with pkg.Client("http://127.0.0.1", token="abc", http=http(), check_rules=False) as client:
        key = sample(entity, entity.column(entity.primary_key[0]), pkg)[0]
        missing = key if not isinstance(key, str) else "missing"
        if isinstance(key, str):
            with pytest.raises(pkg.NotFound) as caught:
                getattr(client, attr).get(missing)
            assert (caught.value.status, caught.value.code) == (404, "not_found")
        with pytest.raises(pkg.MethodNotAllowed) as caught:
            client.session.request("POST", f"{entity.base_path}{entity.path}/1", body={})
        assert caught.value.code == "method_not_allowed"
        model = getattr(pkg.models, type_name(entity))
        text = next(c for c in entity.columns if c.kind == "TEXT" and not c.implicit
                    and not c.sql_type.endswith("]")
                    and c.name not in {k.column for k in entity.checks if k.kind == "enum"})
        huge = model(**{text.name: "x" * 1_100_000})
        with pytest.raises(pkg.PayloadTooLarge) as caught:
            getattr(client, attr).create(huge)
        assert caught.value.status == 413
    for token, cls, status, code in [("forbidden", pkg.Forbidden, 403, "42501"),
                                     ("expired", pkg.Unauthorized, 401, "PGRST301"),
                                     ("ghost-role", pkg.BadRequest, 400, "22023"),
                                     ("db-down", pkg.ServerError, 503, "PGRST000")]:
        with pkg.Client("http://127.0.0.1", token=token, http=http()) as client, \
                pytest.raises(cls) as caught:
            getattr(client, attr).list()
        assert (caught.value.status, caught.value.code) == (status, code)
        assert isinstance(caught.value, pkg.ApiError) and caught.value.message
    # 429 from a source address of its own (the limit is per client address).
    transport = httpx.HTTPTransport(local_address="127.0.0.9")
    with pkg.Client("http://127.0.0.1", http=httpx.Client(transport=transport)) as client:
        refused = None
        for _ in range(backend.rate_limit.burst * 3 + 10):
            try:
                getattr(client, attr).list()
            except pkg.RateLimited as error:
                refused = error
                break
        if backend.rate_limit.requests_per_second:
            assert refused is not None and refused.code == "rate_limited"
            assert refused.retry_after is not None and refused.retry_after > 0


# --- the wire form of the models, for names betterproto2's casing would change --------------

ODD = """
database { name: "odd" }
entity {
  name: "gadget"
  fields { name: "a1b" type: SQL_TYPE_TEXT }
  fields { name: "x_2y" type: SQL_TYPE_BIGINT }
  fields { name: "blob" type: SQL_TYPE_BYTEA }
  fields { name: "took" type: SQL_TYPE_INTERVAL }
  fields { name: "class" type: SQL_TYPE_INTEGER }
  fields { name: "due" type: SQL_TYPE_DATE }
  fields { name: "at" type: SQL_TYPE_TIME }
  fields {
    name: "state" type: SQL_TYPE_TEXT
    constraints { enum_values: ["STATE_UNSPECIFIED", "STATE_ON"] }
  }
}
"""


def test_models_write_and_read_the_wire_contract(tmp_path):
    name, site = install(from_text(ODD, targets=["python_client"]), tmp_path)
    pkg = load(name, site)
    gadget = pkg.models.Gadget(a1b="t", x_2y=9007199254740993, blob=b"\x00\xff",
                               took=datetime.timedelta(seconds=3, milliseconds=500),
                               class_=7, state=pkg.models.GadgetState.ON,
                               due=pkg.google.type.Date(year=2026, month=2, day=3),
                               at=pkg.google.type.TimeOfDay(hours=4, minutes=5, seconds=6,
                                                            nanos=500_000_000))
    wire = {"a1b": "t", "x_2y": "9007199254740993", "blob": "AP8=", "took": "3.500s",
            "class": 7, "state": "STATE_ON", "due": {"year": 2026, "month": 2, "day": 3},
            "at": {"hours": 4, "minutes": 5, "seconds": 6, "nanos": 500000000}}
    info = pkg.client.GADGET
    assert pkg.runtime.to_wire(info, gadget) == wire
    # betterproto2's own snake_case would have written these keys:
    assert set(gadget.to_dict(casing=betterproto2.Casing.SNAKE)) \
        == {"a1_b", "x_2_y", "blob", "took", "class", "state", "due", "at"}
    read = pkg.runtime.from_wire(info, {**wire, "id": "x", "created_at": None, "old": {}})
    assert (read.id, read.a1b, read.x_2y) == ("x", "t", 9007199254740993)
    read.id = ""
    assert read == gadget
    # Durations as the wire contract writes them, negative ones and microseconds included
    # (betterproto2's own Duration refuses a sign and reads through a float).
    for span, text in [(datetime.timedelta(seconds=-1, microseconds=-500_000), "-1.500s"),
                       (datetime.timedelta(microseconds=1), "0.000001s"),
                       (datetime.timedelta(seconds=-86_401), "-86401s"),
                       (datetime.timedelta(seconds=315_576_000_000 - 1,
                                           microseconds=999_999), "315575999999.999999s")]:
        one = pkg.models.Gadget(took=span)
        assert pkg.runtime.to_wire(info, one) == {"took": text}
        assert pkg.runtime.from_wire(info, {"took": text}).took == span
    # Finer than a microsecond: rounded as the database rounds (make_interval, half even).
    for text, micros in [("-0.000001001s", -1), ("0.0000015s", 2), ("0.0000025s", 2),
                         ("0.000000499s", 0)]:
        assert pkg.runtime.from_wire(info, {"took": text}).took == \
            datetime.timedelta(microseconds=micros)
    # Filters take the same forms.
    cols = pkg.columns.Gadget
    pairs = [f.pair for f in (cols.took.eq(datetime.timedelta(seconds=3.5)),
                              cols.blob.eq(b"\x00\xff"), cols.state.eq(pkg.models.GadgetState.ON),
                              cols.x_2y.gt(9007199254740993),
                              cols.due.lt(pkg.google.type.Date(year=2026, month=2, day=3)),
                              cols.at.eq(pkg.google.type.TimeOfDay(hours=4, minutes=5,
                                                                   seconds=6, nanos=5000)))]
    assert pairs == [("took", "eq.3.500s"), ("blob", "eq.AP8="), ("state", "eq.STATE_ON"),
                     ("x_2y", "gt.9007199254740993"), ("due", "lt.2026-02-03"),
                     ("at", "eq.04:05:06.000005")]


# --- 3. mypy --strict over a usage file -----------------------------------------------------

USAGE = '''
from __future__ import annotations

import asyncio
from decimal import Decimal

from shop_client import AsyncClient, Change, Client, NotFound, Page, columns as C
from shop_client.models import Customer, CustomerTier, OrderItems, Product


def sync_usage(api: Client) -> Decimal:
    page: Page[Product] = api.product.list(
        C.Product.category.eq("Books"), C.Product.stock.gt(0),
        order=C.Product.price.desc(), limit=10, count=True)
    total = page.total or 0
    created = api.product.create(Product(sku="A-1", name="Lamp", price="10.50", tags=["x"]))
    api.product.update(created.id, Product(stock=3), fields=[C.Product.active])
    try:
        api.customer.get("missing")
    except NotFound as error:
        print(error.code)
    gold = api.customer.list(C.Customer.tier.in_([CustomerTier.GOLD]))
    item: OrderItems = api.order_items.get(12)
    rows = api.endpoints.products_restock(sku="A-1", amount=5)
    stock: int | None = rows[0]["stock"]
    trending = api.endpoints.products_trending()
    price: str | None = trending[0]["price"]  # a wire domain's column: a string
    print(stock, price, trending[0]["order_count"])
    for change in api.product.subscribe(C.Product.category.eq("Books"), actions=("I",)):
        event: Change[Product] = change
        if event.row is not None:
            print(event.row.name)
        break
    return Decimal(created.price) * total + item.quantity + len(gold) + len(rows)


async def async_usage(api: AsyncClient) -> int:
    customer: Customer = await api.customer.create(Customer(email="a@b.c", name="A"))
    async for change in api.customer.subscribe(last_event_id="1-0"):
        print(change.action, customer.tier)
        break
    return len(await api.order_items.list(C.OrderItems.quantity.gte(1)))


asyncio.run(async_usage(AsyncClient("http://localhost")))
'''
# Each mistake, and the message mypy must give for it.
MISTAKES = [
    ('C.Product.stock.gt(0)', 'C.Product.stok.gt(0)',
     '"type[Product]" has no attribute "stok"'),
    ('C.Product.stock.gt(0)', 'C.Product.stock.gt("0")',
     'Argument 1 to "gt" of "Column" has incompatible type "str"; expected "int"'),
    ('Product(sku="A-1",', 'Product(skew="A-1",', 'Unexpected keyword argument "skew"'),
    ('C.Customer.tier.in_([CustomerTier.GOLD])', 'C.Product.category.eq("x")',
     'Argument 1 to "list" of "Resource" has incompatible type "Filter[Product]"; '
     'expected "Filter[Customer]"'),
    ('api.order_items.get(12)', 'api.order_items.get("12")',
     'Argument 1 to "get" of "Resource" has incompatible type "str"; expected "int"'),
    ('products_restock(sku="A-1", amount=5)', 'products_restock(sku="A-1", amount="5")',
     'Argument "amount" to "products_restock" of "Rpc" has incompatible type "str"; '
     'expected "int"'),
    ('rows[0]["stock"]', 'rows[0]["stok"]', 'TypedDict "ProductsRestockRow" has no key "stok"'),
    ('price: str | None = trending', 'price: float | None = trending',
     'Incompatible types in assignment (expression has type "str | None", variable has type '
     '"float | None")'),
]


@pytest.fixture(scope="module")
def storefront_site(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("typed")
    files = from_textproto(EXAMPLES_DIR / "storefront" / "storefront.textproto",
                           ["python_client"])
    return install(files, folder)[1]


def mypy(site: Path, source: str, folder: Path) -> subprocess.CompletedProcess[str]:
    (folder / "usage.py").write_text(source)
    # betterproto2's own output (the well-known types, its message pool) is not written
    # for --strict; as an installed package mypy would not report it, here it is on
    # mypy_path, so it is silenced by name. The client's own modules are checked.
    (folder / "mypy.ini").write_text(
        f"[mypy]\nstrict = True\nmypy_path = {site}\ncache_dir = {folder / 'cache'}\n"
        "[mypy-shop_client.google.*]\nignore_errors = True\n"
        "[mypy-shop_client.message_pool]\nignore_errors = True\n"
        "[mypy-dateutil.*]\nignore_missing_imports = True\n")
    return subprocess.run([sys.executable, "-m", "mypy", "--config-file",
                           str(folder / "mypy.ini"), str(folder / "usage.py")],
                          capture_output=True, text=True, cwd=folder)


def test_mypy_strict_accepts_correct_use(storefront_site, tmp_path):
    done = mypy(storefront_site, USAGE, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("right,wrong,message", MISTAKES, ids=[m[1] for m in MISTAKES])
def test_mypy_strict_refuses_a_mistake(storefront_site, tmp_path, right, wrong, message):
    assert right in USAGE
    done = mypy(storefront_site, USAGE.replace(right, wrong, 1), tmp_path)
    assert done.returncode == 1, done.stdout
    assert message in done.stdout, done.stdout


@pytest.mark.parametrize("name", EXAMPLES)
def test_generated_code_passes_ruff(name, tmp_path):
    """The client's own modules pass ruff with the package's configuration (the project's
    rule set); betterproto2's output is excluded there, formatted by its compiler."""
    files = from_textproto(EXAMPLES_DIR / name / f"{name}.textproto", ["python_client"])
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    folder = tmp_path / "clients" / "python"
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."],
                          cwd=folder, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    checked = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache",
                              "--show-files", "."], cwd=folder, capture_output=True, text=True)
    shown = checked.stdout
    assert "runtime.py" in shown and "client.py" in shown and "models" not in shown


def test_event_stream_parsing_gaps_and_ticks(storefront_site):
    """The text/event-stream grammar (multi-line data, comments, `retry:`, `id:` without a
    space) and the gateway's events: the opening position (an id without data: taken as the
    resume point, no event), a change, a `gap` (no id: the resume point stays), a clock tick
    (skipped)."""
    pkg = load("shop_client", storefront_site)
    runtime, info = pkg.runtime, pkg.client.CUSTOMER
    parser = runtime._SseParser()
    opening = [parser.feed(line) for line in ("retry: 3172", "id: 5-0", "")]
    assert opening == [None, None, None] and parser.last_id == "5-0"
    lines = [": heartbeat", "retry: 250", "id:7-1", 'data: {"table_name": "customer",',
             'data: "action": "I", "id": "c1", "name": "A", "tier": "TIER_GOLD"}', "",
             "event: gap", 'data: {"table_name": "customer", "action": "T", '
             '"gap": {"last_event_id": "7-1", "trimmed_through": "9-0"}}', "",
             'data: {"table_name": "customer", "action": "T"}', ""]
    events = [e for e in map(parser.feed, lines) if e is not None]
    assert parser.retry == 0.25
    changes = [runtime._change(info, e) for e in events]
    first, gap, tick = changes
    assert (first.id, first.action, first.row.id, first.row.tier) == (
        "7-1", "I", "c1", pkg.models.CustomerTier.GOLD)
    assert (gap.id, gap.row, gap.gap) == (None, None, {"last_event_id": "7-1",
                                                       "trimmed_through": "9-0"})
    assert tick is None
    assert parser.last_id == "7-1"


def test_models_depend_on_neither_where_nor_by_whom(tmp_path, monkeypatch):
    """betterproto2's compiler formats with the ruff on PATH, which reads the configuration
    of the current directory or the user's, and skips __init__.py files the current directory
    has: generated from a directory with its own ruff settings and package files, by a user
    with a ruff configuration of their own and without the environment's scripts on PATH,
    the models are the same."""
    from protoc_gen_crud.targets import python_client

    backend = model_of("storefront")
    expected = python_client.models(backend)
    odd = tmp_path / "project"
    (odd / "google").mkdir(parents=True)
    (odd / "pyproject.toml").write_text("[tool.ruff]\nline-length = 40\n")
    for init in (odd / "__init__.py", odd / "google" / "__init__.py"):
        init.write_text("")
    (tmp_path / "config" / "ruff").mkdir(parents=True)
    (tmp_path / "config" / "ruff" / "ruff.toml").write_text("line-length = 50\n")
    monkeypatch.chdir(odd)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert python_client.models(backend) == expected
    assert "google/__init__.py" in expected
