"""The generated README.md: its Mermaid ER diagram as Mermaid itself reads it (the `mermaid`
package under Node, pinned in tests/node), compared with the tables and foreign keys of the
model, and its route and role listing compared with the model."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from protoc_gen_crud import builder, textproto
from protoc_gen_crud.targets import readme

from .support import EXAMPLES, ROOT, model_of
from .test_devloop import _start_dev

NODE = ROOT / "tests" / "node"

# Foreign keys of every kind the diagram draws differently: NOT NULL and nullable, unique
# (one to one), part of the primary key (identifying), and an entity referencing itself.
KEYS = """
database { name: "keys" }
api { base_path: "/api" }
entity {
  name: "team"
  fields { name: "id" type: SQL_TYPE_UUID }
  fields { name: "parent_id" type: SQL_TYPE_UUID
           constraints { foreign_key { entity: "team" } } }
  api { entity_path: "/teams" }
}
entity {
  name: "member"
  fields { name: "id" type: SQL_TYPE_UUID }
  fields { name: "team_id" type: SQL_TYPE_UUID
           constraints { not_null: true foreign_key { entity: "team" } } }
  fields { name: "badge_id" type: SQL_TYPE_UUID
           constraints { unique: true foreign_key { entity: "badge" } } }
  api { entity_path: "/members" }
}
entity {
  name: "badge"
  fields { name: "id" type: SQL_TYPE_UUID }
  api { entity_path: "/badges" }
}
entity {
  name: "badge_detail"
  fields { name: "badge_id" type: SQL_TYPE_UUID
           constraints { primary_key: true foreign_key { entity: "badge" } } }
  fields { name: "note" type: SQL_TYPE_TEXT }
  api { entity_path: "/badge-details" }
}
"""


def keys_model():
    return builder.build(*textproto.load(KEYS, "keys.textproto"))


MODELS = {**{name: (lambda n=name: model_of(n)) for name in EXAMPLES}, "keys": keys_model}


def mermaid_block(text: str) -> str:
    blocks = re.findall(r"^```mermaid\n(.*?)^```$", text, re.S | re.M)
    assert len(blocks) == 1, "one Mermaid diagram expected"
    return blocks[0]


def parse_er(diagram: str) -> dict:
    """What Mermaid's own parser reads from the diagram (tests/node/mermaid_er.mjs)."""
    done = subprocess.run(["node", str(NODE / "mermaid_er.mjs")], input=diagram, cwd=NODE,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def expected_tables(backend) -> dict[str, list[tuple[str, list[str]]]]:
    """Each table's columns in order with their keys, from the model: entity tables, then
    the outputs of aggregation rules (window bounds and group-by fields as key)."""
    tables = {}
    for e in backend.entities:
        foreign = {fk.column for fk in e.foreign_keys}
        tables[e.name] = [(c.name, [k for k, on in (
            ("PK", c.name in e.primary_key), ("FK", c.name in foreign),
            ("UK", c.unique and c.name not in e.primary_key)) if on]) for c in e.columns]
    for rule in backend.rules:
        if rule.output_table:
            key = ["window_start", "window_end", *rule.group_by]
            tables[rule.output_table] = [(name, ["PK"]) for name in key] + [
                ("value", []), ("updated_at", [])]
    return tables


def expected_relationships(backend) -> list[tuple]:
    found = []
    for e in backend.entities:
        for fk in e.foreign_keys:
            column = e.column(fk.column)
            one_to_one = column.unique or e.primary_key == (fk.column,)
            found.append((fk.table, e.name, fk.column,
                          "ZERO_OR_ONE" if column.nullable else "ONLY_ONE",
                          "ZERO_OR_ONE" if one_to_one else "ZERO_OR_MORE",
                          fk.column in e.primary_key))
    return sorted(found)


@pytest.mark.parametrize("name", [*EXAMPLES, "keys"])
def test_er_diagram_is_mermaid_and_equals_the_tables_and_foreign_keys(name):
    backend = MODELS[name]()
    parsed = parse_er(mermaid_block(readme.text(backend)))
    tables = {table: [(a["name"], sorted(a["keys"])) for a in attributes]
              for table, attributes in parsed["entities"].items()}
    wanted = {table: [(c, sorted(k)) for c, k in columns]
              for table, columns in expected_tables(backend).items()}
    assert tables == wanted
    relationships = sorted((r["referenced"], r["referencing"], r["label"],
                            r["cardinality"]["referenced"], r["cardinality"]["referencing"],
                            r["identifying"]) for r in parsed["relationships"])
    assert relationships == expected_relationships(backend)
    if name == "keys":  # every kind of line is drawn
        assert {r[3:] for r in relationships} == {
            ("ZERO_OR_ONE", "ZERO_OR_MORE", False), ("ONLY_ONE", "ZERO_OR_MORE", False),
            ("ZERO_OR_ONE", "ZERO_OR_ONE", False), ("ONLY_ONE", "ZERO_OR_ONE", True)}


@pytest.mark.parametrize("name", ["storefront"])
def test_er_diagram_types_are_the_columns_types(name):
    """Each attribute's type is the column's SQL type: as is where Mermaid takes it as one
    word, else a short word with the full type in the attribute's comment."""
    backend = model_of(name)
    parsed = parse_er(mermaid_block(readme.text(backend)))
    for e in backend.entities:
        for column, attribute in zip(e.columns, parsed["entities"][e.name], strict=True):
            shown = attribute["type"]
            full = attribute["comment"].split(", ")[0] if shown != column.sql_type else shown
            assert full == column.sql_type, (e.name, column.name, attribute)
            assert ("nullable" in attribute["comment"]) == column.nullable


def test_a_diagram_mermaid_refuses_fails_the_check():
    """The parser is strict where it matters: a SQL type with spaces is refused."""
    done = subprocess.run(["node", str(NODE / "mermaid_er.mjs")], cwd=NODE,
                          input="erDiagram\n  t {\n    timestamp with time zone x\n  }\n",
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0


@pytest.mark.parametrize("name", [*EXAMPLES, "keys"])
def test_lists_every_route_with_its_roles_endpoints_and_streams(name):
    backend = MODELS[name]()
    text = readme.text(backend)
    rows = {tuple(cell.strip() for cell in line.strip("|").split(" | "))[:3]
            for line in text.splitlines() if line.startswith("| ")}

    def who(names):
        return ", ".join(names) or "nobody"

    for e in backend.entities:
        route, a = e.base_path + e.path, e.access
        assert ("GET", f"`{route}`", who(a.read)) in rows
        assert ("POST", f"`{route}`", who(a.create)) in rows
        assert ("PATCH", f"`{route}`", who(a.update)) in rows
        assert ("DELETE", f"`{route}`", who(a.delete)) in rows
        if len(e.primary_key) == 1:
            assert ("DELETE", f"`{route}/{{{e.primary_key[0]}}}`", who(a.delete)) in rows
        if e.streamed:
            assert ("GET", f"`/stream/sse/{e.name}`", who(a.read)) in rows
            assert f"`crud.{e.name}`" in text
        if a.owner_column:
            assert f"`{a.owner_column}` equals the token's user claim" in text
    for ep in backend.endpoints:
        assert (ep.method, f"`{ep.base_path}{ep.path}`", who(ep.roles)) in rows
    for base in {e.base_path for e in backend.entities}:
        assert f"{base}/docs/README.md" in text and f"{base}/openapi.json" in text
    assert "docker compose up --watch" in text and "make dev" in text


def test_the_project_readme_make_dev_example_works(open_tmp):
    """The project README's make-dev quick start, run as written against a real `crud-dev`
    (in a namespace of its own name, and without sudo when there is none, as root): it
    creates a product through the gateway's GraphQL route, lists it, and /health names the
    parts. The token it makes must match make dev's default secret."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Try it without Docker: `make dev`", 1)[1].split("\n## ", 1)[0]
    (script,) = re.findall(r"```bash\n(.*?)```", section, re.S)
    assert "ip netns exec crud-dev " in script
    name = f"crudreadme{os.getpid()}"
    script = script.replace("ip netns exec crud-dev ", f"ip netns exec {name} ")
    if shutil.which("sudo") is None:
        script = 'sudo() { "$@"; }\n' + script
    env = {k: v for k, v in os.environ.items() if k != "PGRST_JWT_SECRET"}
    process = None
    try:
        process = _start_dev([str(Path(sys.executable).parent / "crud-dev"),
                              str(ROOT / "configs" / "product.textproto"),
                              "-o", str(open_tmp / "generated")],
                             {**env, "CRUD_DEV_NETNS": name})
        done = subprocess.run(["bash", "-e", "-c", script], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert len(done.stdout.splitlines()) == 3, (done.stdout, done.stderr)
        created, listed, health = (json.loads(line) for line in done.stdout.splitlines())
        product = created["data"]["createProduct"]["product"]
        assert product["name"] == "Lamp" and product["price"] == "10.50" and product["id"]
        assert product in listed["data"]["products"]["nodes"]
        assert {part: health["parts"][part] for part in ("graphql", "redis", "relay")} == {
            "graphql": "up", "redis": "up", "relay": "up"}, health
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    finally:
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)
