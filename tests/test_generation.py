"""Generation as a whole: golden files, both front doors agreeing, determinism."""

from __future__ import annotations

import shutil

import pytest

from protoc_gen_crud import textproto

from .support import (
    EXAMPLES,
    EXAMPLES_DIR,
    ROOT,
    from_text,
    from_textproto,
    protoc,
    read_tree,
    shared_file,
)

GOLDEN = ROOT / "testdata" / "golden"


@pytest.mark.parametrize("name", EXAMPLES)
def test_golden_files(name, request):
    files = from_textproto(EXAMPLES_DIR / name / f"{name}.textproto")
    folder = GOLDEN / name
    if request.config.getoption("--update-goldens"):
        shutil.rmtree(folder, ignore_errors=True)
        for rel, text in files.items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_text(text)
    assert read_tree(folder) == files, (
        "generated output differs from testdata/golden; review the diff and refresh with "
        "pytest --update-goldens")


@pytest.mark.parametrize("name", EXAMPLES)
def test_both_front_doors_give_byte_identical_output(name, tmp_path):
    via_config = from_textproto(EXAMPLES_DIR / name / f"{name}.textproto")
    done = protoc(EXAMPLES_DIR / name / f"{name}.proto", tmp_path)
    assert done.returncode == 0, done.stderr
    assert read_tree(tmp_path) == via_config


@pytest.mark.parametrize("name", EXAMPLES)
def test_output_is_deterministic(name):
    path = EXAMPLES_DIR / name / f"{name}.textproto"
    assert from_textproto(path) == from_textproto(path)


def test_seed_examples_are_verbatim_from_the_seed():
    text = shared_file("seed/UNIVERSAL-BACKEND.md", "the seed document").read_text()
    for name in ("product", "order", "article", "sensor_reading"):
        config = (EXAMPLES_DIR / name / f"{name}.textproto").read_text()
        assert "```protobuf\n" + config + "```" in text, name


def test_triple_quoted_strings_keep_line_numbers():
    text = 'entity {\n  name: """\n    product\n  """\n  fields { name: "x" }\n}\n'
    rewritten = textproto.rewrite_triple_quoted(text)
    assert rewritten.count("\n") == text.count("\n")
    backend, sources = textproto.load(text, "t.textproto")
    assert backend.entity[0].name == "product"
    assert sources.find(("entity", 0, "fields", 0)).line == 5


def test_default_primary_key_and_audit_columns_are_added():
    files = from_text('entity { name: "note" fields { name: "body" type: SQL_TYPE_TEXT } }',
                      targets=["postgres"])
    table = files["migrations/0100_note.sql"]
    assert '"id" uuid DEFAULT gen_random_uuid() NOT NULL' in table
    assert '"created_at" timestamp with time zone DEFAULT now() NOT NULL' in table
    assert '"updated_at" timestamp with time zone DEFAULT now() NOT NULL' in table


def test_identifiers_from_input_are_always_quoted():
    files = from_text('entity { name: "order" fields { name: "select" type: SQL_TYPE_TEXT } }',
                      targets=["postgres"])
    table = files["migrations/0100_order.sql"]
    assert 'CREATE TABLE IF NOT EXISTS "public"."order"' in table
    assert '"select" text' in table


def test_root_endpoints_and_rules_join_an_entity_with_its_own_blocks():
    """A single entity with its own api/stream blocks keeps the root's endpoints and rules."""
    files = from_text("""
        entity {
          name: "product"
          fields { name: "price" type: SQL_TYPE_DECIMAL }
          api { entity_path: "/products" }
          stream { enable_streaming: true }
        }
        api { custom_endpoints { path: "/products/cheap" sql_query: "SELECT 1 AS one" } }
    """, targets=["postgres"])
    assert "'products_cheap'" in files["migrations/0300_endpoints.sql"]
