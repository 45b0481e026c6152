"""The README's TypeScript example (section "TypeScript"), checked as a user would run it.

The two code blocks marked `<!-- checked by tests/test_typescript_example.py: … -->` are
taken from README.md as they stand: the commands generate the storefront backend's types
with openapi-typescript and its messages with protoc-gen-es (tests/node, under the
grpcio-tools protoc the project uses), and `src/shop.ts` must compile under `tsc --strict`
against them; a misspelt column filter, message field or route, and a custom endpoint
argument of the wrong type, must not. Then the emitted JavaScript runs under Node against
the generated gateway on real nginx with the recording PostgREST stand-in and Redis: the
requests PostgREST receives must be the ones the calls stand for (proto field names in the
bodies, the filters, order, paging and count, the endpoint's named arguments, the bearer
token), the total is read from Content-Range, and a change written to the product stream the
way the relay writes it reaches the `watch` callback parsed into a message. Run again with
the block's `useProtoFieldName: true` turned off, the order line's body carries `productId`
and the same check fails: that is the mistake the wire contract is about.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import parse_qsl

import pytest

from .support import EXAMPLES_DIR, ROOT, Recording, from_textproto, serving_gateway, write_tree

NODE_MODULES = ROOT / "tests" / "node" / "node_modules"
TSC = NODE_MODULES / "typescript" / "bin" / "tsc"
TOKEN = "admin-token"
PRODUCT_ID = "7d0c2b58-0b39-4b0c-9f0e-5a3f3c1f4e11"


def readme_block(name: str) -> str:
    """The fenced block right after `<!-- checked by tests/test_typescript_example.py: NAME -->`
    (exactly one such block, so the test cannot check a copy the README no longer shows)."""
    marker = re.escape(f"<!-- checked by tests/test_typescript_example.py: {name} -->")
    found = re.findall(marker + r"\n```[a-z]*\n(.*?)\n```\n", (ROOT / "README.md").read_text(),
                       re.DOTALL)
    assert len(found) == 1, f"README.md must have one block marked {name!r}"
    return found[0] + "\n"


def project(folder: Path, shop_ts: str | None = None) -> Path:
    """A user's project: the generated backend, storefront.proto, the tools (tests/node), the
    README's commands run in it and its `src/shop.ts` (or `shop_ts`)."""
    files = from_textproto(EXAMPLES_DIR / "storefront" / "storefront.textproto",
                           ["openapi", "openresty"])
    write_tree(files, folder / "generated")
    (folder / "proto").mkdir()
    (folder / "proto" / "storefront.proto").write_text(
        (EXAMPLES_DIR / "storefront" / "storefront.proto").read_text())
    (folder / "src" / "gen").mkdir(parents=True)
    (folder / "node_modules").symlink_to(NODE_MODULES)
    (folder / "package.json").write_text('{"type": "module"}\n')
    (folder / "tsconfig.json").write_text(json.dumps({"compilerOptions": {
        "strict": True, "module": "nodenext", "moduleResolution": "nodenext",
        "target": "es2022", "lib": ["es2022", "dom"], "skipLibCheck": True,
        "outDir": "dist"}, "include": ["src"]}))
    # The commands as written; `protoc` is the grpcio-tools one the project uses.
    protoc = f"\n{sys.executable} -m grpc_tools.protoc "
    script = readme_block("commands").replace("\nprotoc ", protoc)
    assert protoc in script, "the README's commands no longer run protoc"
    # protoc-gen-crud from this environment; npx finds the tools in node_modules, offline.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    env = {**os.environ, "PATH": path, "npm_config_offline": "true"}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (folder / "src" / "api.d.ts").exists() and (folder / "src/gen/storefront_pb.ts").exists()
    (folder / "src" / "shop.ts").write_text(shop_ts or readme_block("src/shop.ts"))
    return folder


def tsc(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["node", str(TSC), "-p", "."], cwd=folder, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> Path:
    folder = project(tmp_path_factory.mktemp("ts-example"))
    done = tsc(folder)
    assert done.returncode == 0, done.stdout + done.stderr
    return folder


def test_the_example_compiles_under_strict(compiled):
    assert (compiled / "dist" / "shop.js").exists()


# Each mistake in the README's block, and what tsc must say about it.
MISTAKES = [
    ('stock: "gt.0"', 'stokc: "gt.0"', "'stokc' does not exist in type"),
    ('name: "Lamp"', 'nmae: "Lamp"', "'nmae' does not exist in type"),
    ('"/api/v1/order-items"', '"/api/v1/order_items"', '"/api/v1/order_items"'),
    ("{ body: { sku, amount } }", "{ body: { sku, amount: String(amount) } }",
     "Type 'string' is not assignable to type 'number'"),
]


@pytest.mark.parametrize(("right", "wrong", "message"), MISTAKES,
                         ids=["filter", "message-field", "route", "endpoint-argument"])
def test_tsc_refuses_a_mistake(compiled, tmp_path, right, wrong, message):
    shop_ts = readme_block("src/shop.ts")
    assert shop_ts.count(right) == 1, right
    folder = project(tmp_path, shop_ts.replace(right, wrong))
    done = tsc(folder)
    assert done.returncode != 0 and message in done.stdout, done.stdout


# --- running it through the real gateway ------------------------------------------------------

RUN = """
import { EventSource } from "eventsource";  // Node 20 has no EventSource of its own
globalThis.EventSource = EventSource;
// Node's fetch keeps no cookies: this plays the browser's cookie jar (name=value for the
// cookie's Path), so the example runs as it would in a page.
const jar = [];
const nodeFetch = globalThis.fetch;
globalThis.fetch = async (input, init) => {
  const url = new URL(input instanceof Request ? input.url : String(input));
  const cookies = jar.filter((c) => url.pathname.startsWith(c.path)).map((c) => c.pair);
  const response = cookies.length
    ? await nodeFetch(input, { ...init, headers: { ...init?.headers, Cookie: cookies.join("; ") } })
    : await nodeFetch(input, init);
  const set = response.headers.get("set-cookie");
  if (set) {
    const [pair, ...attributes] = set.split(";").map((part) => part.trim());
    const path = attributes.find((a) => a.toLowerCase().startsWith("path="));
    jar.push({ pair, path: path ? path.slice(5) : "/" });
  }
  return response;
};
const { create, toJson } = await import("@bufbuild/protobuf");
const { ProductSchema } = await import("./dist/gen/storefront_pb.js");
const { shop } = await import("./dist/shop.js");

const [baseUrl, token, productId] = process.argv.slice(2);
const api = shop(baseUrl, token);
const json = (p) => toJson(ProductSchema, p, { useProtoFieldName: true });
const out = {};
out.added = json(await api.add(create(ProductSchema, {
  sku: "L-1", name: "Lamp", price: "10.50", cost: "4", category: "Lighting" })));
await api.order(productId, 2, "10.50");
const page = await api.category("Lighting", 1);
out.page = { rows: page.rows.map(json), total: page.total };
out.stock = await api.restock("L-1", 5);
out.change = await new Promise((resolve, reject) => {
  let events;
  api.watch("Lighting", (action, product) => {
    events.close();
    resolve({ action, product: json(product) });
  }).then((opened) => {
    events = opened;
    events.onopen = () => console.error("open");
  }, reject);
});
console.log(JSON.stringify(out));
"""

LAMP = {"sku": "L-1", "name": "Lamp", "price": "10.50", "cost": "4", "category": "Lighting"}
CHANGED = {"id": PRODUCT_ID, "sku": "L-2", "name": "Desk lamp", "price": "12.00",
           "cost": "5.00", "category": "Lighting", "attributes": {"watts": 9},
           "tags": ["desk"], "stock": 3, "active": True}


def expected(order_body: dict) -> list[tuple[str, str, list[tuple[str, str]], str | None, object]]:
    """(method, PostgREST path, query, Prefer, JSON body) of each call, in order; written from
    PostgREST's query syntax and the wire contract, not read from the example."""
    return [
        ("POST", "/product", [], "return=representation", LAMP),
        ("POST", "/order_items", [], None, order_body),
        ("GET", "/product", [("category", "eq.Lighting"), ("stock", "gt.0"),
                             ("order", "price.desc"), ("limit", "20"), ("offset", "20")],
         "count=exact", None),
        ("POST", "/rpc/products_restock", [], None, {"sku": "L-1", "amount": 5}),
    ]


def run_example(folder: Path, host, redis, recording: Recording) -> tuple[dict, list[dict]]:
    """Run the compiled example once; while it runs, write product changes to the stream
    (one of another category first) until it has received one. Returns what it printed and
    the requests the stand-in received."""
    (folder / "run.mjs").write_text(RUN)
    recording.mark()
    node = host.popen("node", "run.mjs", "http://127.0.0.1", TOKEN, PRODUCT_ID, cwd=folder,
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stop = threading.Event()

    def publish() -> None:
        client = redis.client()
        n = 0
        while not stop.wait(0.2):
            for category in ("Books", "Lighting"):
                n += 1
                data = {"table_name": "product", "action": "I", **CHANGED,
                        "category": category, "created_at": "2026-02-03T04:05:06+00:00",
                        "updated_at": "2026-02-03T04:05:06+00:00", "old": None,
                        "commit_time": "2026-02-03T04:05:06+00:00", "commit_lsn": f"0/{n}"}
                # The relay's layout: a CloudEvent with `data` as its last key.
                event = {"specversion": "1.0", "id": f"{n}-0", "type": "crud.product.insert",
                         "source": "test", "data": data}
                client.xadd("crud.product", {"data": json.dumps(event)}, id=f"{n}-0")

    client = redis.client()
    client.delete("crud.product")
    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    try:
        stdout, stderr = node.communicate(timeout=60)
    finally:
        stop.set()
        thread.join()
        if node.poll() is None:
            node.kill()
        client.delete("crud.product")
    assert node.returncode == 0, stderr
    return json.loads(stdout), recording.since()


def check(seen: list[dict], order_body: dict) -> None:
    calls = expected(order_body)
    assert len(seen) == len(calls) + 1, seen  # + the stream's permission probe
    for (method, path, query, prefer, body), request in zip(calls, seen, strict=False):
        assert (request["method"], request["path"]) == (method, path), request
        assert parse_qsl(request["query"], keep_blank_values=True) == query, request["query"]
        assert request["headers"].get("prefer") == prefer, request["headers"]
        assert request["headers"]["authorization"] == f"Bearer {TOKEN}"
        if body is None:
            assert request["body"] == ""
        else:
            assert request["headers"]["content-type"].startswith("application/json")
            assert json.loads(request["body"]) == body
    probe = seen[-1]  # the token from the session cookie is the one PostgREST judges
    assert (probe["method"], probe["path"]) == ("GET", "/product"), probe
    assert probe["headers"]["authorization"] == f"Bearer {TOKEN}"


@pytest.fixture(scope="module")
def gateway(compiled, test_host, recording, redis_server):
    with serving_gateway(test_host, compiled / "generated" / "openresty",
                         env={"REDIS_PASSWORD": redis_server.password}) as running:
        yield running


def test_the_example_runs_through_the_gateway(compiled, gateway, test_host, redis_server,
                                              recording):
    out, seen = run_example(compiled, test_host, redis_server, recording)
    order = {"product_id": PRODUCT_ID, "quantity": 2, "price": "10.50"}
    check(seen, order)
    # The stand-in's canned row parses (its unknown key ignored) into an empty message.
    assert out["added"] == {}
    assert out["page"] == {"rows": [{}], "total": 1}  # Content-Range: 0-0/1
    assert "stock" not in out  # undefined: the canned row has no `stock` column
    assert out["change"] == {"action": "I", "product": CHANGED}


def test_camel_case_names_would_be_caught(tmp_path, gateway, test_host, redis_server,
                                          recording):
    """The same run with protobuf-es's default names: the order line goes out as
    `productId`, and the check above fails on it."""
    shop_ts = readme_block("src/shop.ts")
    assert shop_ts.count("useProtoFieldName: true") == 2
    folder = project(tmp_path, shop_ts.replace("useProtoFieldName: true",
                                               "useProtoFieldName: false"))
    done = tsc(folder)
    assert done.returncode == 0, done.stdout
    _, seen = run_example(folder, test_host, redis_server, recording)
    assert json.loads(seen[1]["body"]) == {"productId": PRODUCT_ID, "quantity": 2,
                                           "price": "10.50"}
    with pytest.raises(AssertionError):
        check(seen, {"product_id": PRODUCT_ID, "quantity": 2, "price": "10.50"})
