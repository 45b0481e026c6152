"""The plugin as protoc and buf run it: parameters, errors, request dumps, presence rules."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from google.protobuf.compiler import plugin_pb2

from protoc_gen_crud import __version__
from protoc_gen_crud.devloop import protoc_command
from protoc_gen_crud.plugin import run
from protoc_gen_crud.resources import proto_include_dir

from .support import BIN, EXAMPLES_DIR, PLUGIN, from_textproto, protoc, read_tree


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def test_version_and_include_path():
    version = subprocess.run([str(PLUGIN), "--version"], capture_output=True, text=True)
    assert version.stdout.strip() == f"protoc-gen-crud {__version__}"
    include = subprocess.run([str(PLUGIN), "--include-path"], capture_output=True, text=True)
    assert (Path(include.stdout.strip()) / "crud" / "v1" / "options.proto").is_file()


def test_target_parameter_selects_targets(tmp_path):
    done = protoc(EXAMPLES_DIR / "product" / "product.proto", tmp_path,
                  parameter="target=postgres")
    assert done.returncode == 0, done.stderr
    assert {p.split("/")[0] for p in read_tree(tmp_path)} == {"migrations"}


@pytest.mark.parametrize(("parameter", "message"), [
    ("colour=blue", "unknown plugin parameter 'colour'"),
    ("target=mongodb", "unknown target 'mongodb'"),
    ("target", "is not key=value"),
])
def test_bad_parameters_are_errors(parameter, message, tmp_path):
    done = protoc(EXAMPLES_DIR / "product" / "product.proto", tmp_path, parameter=parameter)
    assert done.returncode != 0
    assert message in done.stderr
    assert not any(tmp_path.rglob("*"))


def test_repeated_parameters_accumulate():
    request = plugin_pb2.CodeGeneratorRequest(parameter="target=postgres,target=postgres")
    response = run(request)
    assert "unknown" not in response.error


def test_request_dump_replays_to_the_same_output(tmp_path):
    dump = tmp_path / "request.bin"
    out = tmp_path / "out"
    done = protoc(EXAMPLES_DIR / "order" / "order.proto", out,
                  env={"PROTOC_GEN_CRUD_DUMP_REQUEST": str(dump)})
    assert done.returncode == 0, done.stderr
    replay = subprocess.run([str(BIN / "crud-gen"), "--request", str(dump), "-o",
                             str(tmp_path / "replay")], capture_output=True, text=True)
    assert replay.returncode == 0, replay.stderr
    assert read_tree(tmp_path / "replay") == read_tree(out)
    raw = subprocess.run([str(PLUGIN)], input=dump.read_bytes(), capture_output=True)
    response = plugin_pb2.CodeGeneratorResponse.FromString(raw.stdout)
    assert {f.name: f.content for f in response.file} == read_tree(out)


def test_presence_decides_null_and_types_are_inferred(tmp_path):
    write(tmp_path, "shapes.proto", """
        syntax = "proto3";
        package shapes.v1;
        import "crud/v1/options.proto";
        import "google/protobuf/timestamp.proto";
        import "google/protobuf/wrappers.proto";
        message Shape {
          option (crud.v1.entity) = {};
          enum Kind { KIND_UNSPECIFIED = 0; KIND_ROUND = 1; KIND_SQUARE_ISH = 2; }
          string label = 1;
          optional string note = 2;
          int32 small = 3;
          int64 big = 4;
          uint64 huge = 5;
          bool flag = 6;
          double ratio = 7;
          float rough = 8;
          bytes blob = 9;
          google.protobuf.Timestamp seen_at = 10;
          Kind kind = 11;
          repeated string labels = 12;
          map<string, string> extra = 13;
          google.protobuf.Int32Value maybe = 14;
          string forced = 15 [(crud.v1.field).constraints.not_null = false];
          oneof choice { string left = 16; string right = 17; }
        }
    """)
    done = protoc(tmp_path / "shapes.proto", tmp_path / "out", parameter="target=postgres")
    assert done.returncode == 0, done.stderr
    table = (tmp_path / "out" / "migrations" / "0100_shape.sql").read_text()
    # Implicit presence: NOT NULL with the zero value as default (proto3 JSON leaves zero
    # values out); 64-bit integers, decimals and bytes in their wire domains.
    for line in [
        "\"label\" text DEFAULT ''::text NOT NULL,", '"note" text,',
        "\"small\" integer DEFAULT '0'::integer NOT NULL,",
        "\"big\" crud_meta.int64_zero DEFAULT '0'::bigint NOT NULL,",
        "\"huge\" crud_meta.decimal_text_20_0_zero DEFAULT '0'::numeric(20,0) NOT NULL,",
        "\"flag\" boolean DEFAULT 'false'::boolean NOT NULL,",
        "\"ratio\" double precision DEFAULT '0'::double precision NOT NULL,",
        "\"rough\" real DEFAULT '0'::real NOT NULL,",
        "\"blob\" crud_meta.bytes_zero DEFAULT ''::bytea NOT NULL,",
        '"seen_at" timestamp with time zone,',
        "\"kind\" text DEFAULT 'KIND_UNSPECIFIED'::text NOT NULL,",
        "\"labels\" text[] DEFAULT '{}'::text[] NOT NULL,",
        "\"extra\" jsonb DEFAULT '{}'::jsonb NOT NULL,", '"maybe" integer,', '"forced" text,',
        '"left" text,', '"right" text,',
    ]:
        assert f"    {line}" in table, line
    assert ("CHECK (\"kind\" IN (''KIND_UNSPECIFIED'', ''KIND_ROUND'', ''KIND_SQUARE_ISH''))"
            in table)


def test_proto2_and_editions_presence(tmp_path):
    write(tmp_path, "two.proto", """
        syntax = "proto2";
        package two.v1;
        import "crud/v1/options.proto";
        message Legacy {
          option (crud.v1.entity) = {};
          required string code = 1;
          optional string note = 2;
        }
    """)
    write(tmp_path, "ed.proto", """
        edition = "2023";
        package ed.v1;
        import "crud/v1/options.proto";
        message Modern {
          option (crud.v1.entity) = {};
          string plain = 1;
          string strict = 2 [features.field_presence = IMPLICIT];
        }
    """)
    for name, expected in (("two", ['"code" text NOT NULL,', '"note" text,']),
                           ("ed", ['"plain" text,', "\"strict\" text DEFAULT ''::text NOT NULL,"])):
        done = protoc(tmp_path / f"{name}.proto", tmp_path / name, parameter="target=postgres")
        assert done.returncode == 0, done.stderr
        table = next((tmp_path / name / "migrations").glob("0100_*.sql")).read_text()
        for line in expected:
            assert f"    {line}" in table, (name, line)


@pytest.fixture
def buf_workspace(tmp_path):
    """A buf v2 workspace: the options module plus an app module split over two files."""
    shutil.copytree(proto_include_dir(), tmp_path / "proto")
    source = (EXAMPLES_DIR / "storefront" / "storefront.proto").read_text()
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "storefront.proto").write_text(source)
    (tmp_path / "buf.yaml").write_text(
        "version: v2\nmodules:\n  - path: proto\n  - path: app\n")
    (tmp_path / "buf.gen.yaml").write_text(
        "version: v2\nplugins:\n  - local: protoc-gen-crud\n    out: generated\n"
        "    strategy: all\ninputs:\n  - directory: app\n")
    return tmp_path


def run_buf(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "BUF_CACHE_DIR": str(folder / ".cache")}
    return subprocess.run([str(BIN / "buf"), *args], cwd=folder, capture_output=True,
                          text=True, env=env)


def test_buf_generate_strategy_all(buf_workspace):
    done = run_buf(buf_workspace, "generate")
    assert done.returncode == 0, done.stderr
    expected = from_textproto(EXAMPLES_DIR / "storefront" / "storefront.textproto")
    assert read_tree(buf_workspace / "generated") == expected


def test_buf_one_backend_over_several_files(buf_workspace):
    """Entities spread over files of one module still form one backend with strategy: all."""
    app = buf_workspace / "app"
    source = (app / "storefront.proto").read_text()
    head, _, rest = source.partition("message Customer {")
    customer, _, others = rest.partition("\nmessage Product {")
    (app / "storefront.proto").write_text(head + "message Product {" + others)
    (app / "customer.proto").write_text(
        'syntax = "proto3";\npackage examples.storefront.v1;\n'
        'import "crud/v1/options.proto";\n\nmessage Customer {' + customer)
    done = run_buf(buf_workspace, "generate")
    assert done.returncode == 0, done.stderr
    files = read_tree(buf_workspace / "generated")
    assert {"migrations/0100_customer.sql", "migrations/0100_product.sql",
            "migrations/0100_order_items.sql", "migrations/0200_foreign_keys.sql"} <= set(files)


def test_conflicting_database_options_across_files(tmp_path):
    write(tmp_path, "a.proto", """
        syntax = "proto3";
        package multi.v1;
        import "crud/v1/options.proto";
        option (crud.v1.database) = {name: "one"};
        message A { option (crud.v1.entity) = {}; string x = 1; }
    """)
    write(tmp_path, "b.proto", """
        syntax = "proto3";
        package multi.v1;
        import "crud/v1/options.proto";
        option (crud.v1.database) = {name: "two"};
        message B { option (crud.v1.entity) = {}; string y = 1; }
    """)
    done = subprocess.run(protoc_command(tmp_path, tmp_path, "a.proto", "b.proto"),
                          capture_output=True, text=True)
    assert done.returncode != 0
    assert "b.proto:4:1: option (crud.v1.database) differs from the one at a.proto:4:1" in (
        done.stderr)


def test_plugin_via_python_module(tmp_path):
    """`python -m protoc_gen_crud` is the same plugin (for environments without scripts)."""
    wrapper = tmp_path / "protoc-gen-crud"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} -m protoc_gen_crud \"$@\"\n")
    wrapper.chmod(0o755)
    out = tmp_path / "out"
    out.mkdir()
    done = subprocess.run(protoc_command(EXAMPLES_DIR / "article", out, "article.proto",
                                         plugin=wrapper), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert read_tree(out) == from_textproto(EXAMPLES_DIR / "article" / "article.textproto")


def test_crud_gen_removes_only_its_own_stale_files(tmp_path):
    out = tmp_path / "generated"
    crud_gen = str(BIN / "crud-gen")
    storefront = EXAMPLES_DIR / "storefront" / "storefront.textproto"
    product = EXAMPLES_DIR / "product" / "product.textproto"
    assert subprocess.run([crud_gen, str(storefront), "-o", str(out)]).returncode == 0
    (out / "migrations" / "9999_mine.sql").write_text("-- written by hand\n")
    assert subprocess.run([crud_gen, str(product), "-o", str(out)]).returncode == 0
    left = set(read_tree(out))
    assert left == set(from_textproto(product)) | {"migrations/9999_mine.sql"}


def test_service_token_is_a_jwt_postgrest_can_verify(tmp_path):
    """crud-gen --token signs HS256 with PGRST_JWT_SECRET; checked here with PyJWT-free
    recomputation by the standard library's hmac, independently of the CLI's code path."""
    import base64
    import hashlib
    import hmac
    import json
    import os
    import subprocess

    from .support import BIN

    secret = "s" * 40
    env = {**os.environ, "PGRST_JWT_SECRET": secret}
    # The backend's settings come from its .proto too (read through protoc, as buf would).
    done = subprocess.run([str(BIN / "crud-gen"), str(EXAMPLES_DIR / "product" /
                                                      "product.proto"), "--token",
                           "crud_pipeline"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    header, claims, signature = done.stdout.strip().split(".")
    padded = claims + "=" * (-len(claims) % 4)
    assert json.loads(base64.urlsafe_b64decode(padded)) == {"role": "crud_pipeline"}
    expected = hmac.new(secret.encode(), f"{header}.{claims}".encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64encode(expected).decode().rstrip("=") == signature
    short = subprocess.run([str(BIN / "crud-gen"), "--token", "x"], capture_output=True,
                           text=True, env={**os.environ, "PGRST_JWT_SECRET": "short"})
    assert short.returncode == 2 and "PGRST_JWT_SECRET" in short.stderr
    # Without the backend no token is guessed (its role claim or audience could differ).
    blind = subprocess.run([str(BIN / "crud-gen"), "--token", "x"], capture_output=True,
                           text=True, env=env)
    assert blind.returncode == 2 and "--token needs the backend" in blind.stderr
