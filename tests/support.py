"""Helpers shared by the tests: generating through each front door, running protoc."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from protoc_gen_crud import builder, textproto
from protoc_gen_crud.devloop import DevLoop, protoc_command
from protoc_gen_crud.devstack import Gateway, NetNamespace
from protoc_gen_crud.generate import generate

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = ROOT / "testdata" / "examples"
EXAMPLES = sorted(p.name for p in EXAMPLES_DIR.iterdir() if p.is_dir())
SEED_EXAMPLES = ["article", "order", "product", "sensor_reading"]
BIN = Path(sys.executable).parent
PLUGIN = BIN / "protoc-gen-crud"


def from_textproto(path: Path, targets=None) -> dict[str, str]:
    backend, sources = textproto.load(path.read_text(), str(path))
    return generate(builder.build(backend, sources), targets)


def model_of(name: str):
    """The validated model of one example, from its textproto."""
    path = EXAMPLES_DIR / name / f"{name}.textproto"
    return builder.build(*textproto.load(path.read_text(), str(path)))


def from_text(text: str, name: str = "test.textproto", targets=None) -> dict[str, str]:
    backend, sources = textproto.load(text, name)
    return generate(builder.build(backend, sources), targets)


SHARED = ROOT.parent / "shared"


def shared_file(relative: str, what: str) -> Path:
    """A file of the `shared/` folder that sits beside the checkout (the seed, reference
    schemas). `.ci/run` sets CRUD_REQUIRE_SHARED, so there a missing file fails the test
    instead of hiding it; a checkout used on its own skips the check and says why."""
    path = SHARED / relative
    if not path.exists():
        if os.environ.get("CRUD_REQUIRE_SHARED"):
            pytest.fail(f"{what} is not at {path}")
        pytest.skip(f"{what} is not at {path}: shared/ is not beside this checkout")
    return path


def validate_descriptor_set(path: Path) -> Path:
    """buf/validate/validate.proto (with its imports) as a FileDescriptorSet for protoc's
    `--descriptor_set_in`, taken from the serialized descriptor in the `protovalidate`
    package's generated module: what a user's buf dependency gives, without copying the
    .proto into this repository."""
    import ast

    from google.protobuf import descriptor_pb2, duration_pb2, field_mask_pb2, timestamp_pb2

    protovalidate = pytest.importorskip("protovalidate")
    source = Path(protovalidate.__file__).parent / "_gen" / "buf" / "validate" / "validate_pb.py"
    blob = next(node.value for node in ast.walk(ast.parse(source.read_text()))
                if isinstance(node, ast.Constant) and isinstance(node.value, bytes)
                and node.value.startswith(b"\n\x1bbuf/validate/validate.proto"))
    files = descriptor_pb2.FileDescriptorSet()
    for module in (descriptor_pb2, duration_pb2, field_mask_pb2, timestamp_pb2):
        module.DESCRIPTOR.CopyToProto(files.file.add())
    files.file.add().ParseFromString(blob)
    path.write_bytes(files.SerializeToString())
    return path


def protoc(proto: Path, out: Path, *, parameter: str = "", include: Path | None = None,
           env: dict[str, str] | None = None,
           descriptor_set_in: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real protoc (from grpcio-tools) with our plugin on one file; imports not on
    the include path may come from `descriptor_set_in`."""
    out.mkdir(parents=True, exist_ok=True)
    name = str(proto.relative_to(include) if include else proto.name)
    command = protoc_command(include or proto.parent, out, name, parameter=parameter)
    if descriptor_set_in is not None:
        command.insert(3, f"--descriptor_set_in={descriptor_set_in}")
    return subprocess.run(
        command,
        capture_output=True, text=True, cwd=str(include or proto.parent),
        env={**os.environ, **(env or {})},
    )


def read_tree(folder: Path) -> dict[str, str]:
    """Every generated file under `folder`, except crud-gen's own manifest."""
    return {
        str(p.relative_to(folder)): p.read_text()
        for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".crud-gen-manifest"
    }


def write_tree(files: dict[str, str], folder: Path) -> Path:
    for rel, text in files.items():
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return folder


@contextlib.contextmanager
def serving_gateway(netns: NetNamespace, openresty_dir: Path, docs: Path | None = None,
                    env: dict[str, str] | None = None):
    """The generated gateway on real nginx in the namespace, listening on port 80 until the
    block ends (and its port free again after it, for the next test's gateway)."""
    running = Gateway(netns, openresty_dir, docs=docs).start(env)
    try:
        wait_port(netns, 80)
        yield running
    finally:
        running.stop()
        wait_port(netns, 80, up=False)


def chromium_argv(profile: Path, *extra: str) -> list[str]:
    """Headless Chromium with its own profile and none of its background traffic (which would
    fail in the namespace and muddy the page's network log)."""
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is not installed: run scripts/setup.sh --system")
    return [binary, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
            "--no-first-run", "--disable-sync", "--disable-background-networking",
            "--disable-component-update", "--enable-logging=stderr", "--v=0", *extra]


def wait_port(netns: NetNamespace, port: int, up: bool = True, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        try:
            with netns.inside():
                conn.connect()
            reachable = True
        except OSError:
            reachable = False
        finally:
            conn.close()
        if reachable == up:
            return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} did not become {'open' if up else 'closed'}")


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)


def call(netns: NetNamespace, method: str, path: str, headers: dict | None = None,
         body: bytes | str | None = None, port: int = 80, source: str = "127.0.0.1") -> Response:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10,
                                      source_address=(source, 0))
    with netns.inside():
        conn.connect()
    try:
        conn.request(method, path, body=body, headers=headers or {})
        reply = conn.getresponse()
        return Response(reply.status, {k.lower(): v for k, v in reply.getheaders()},
                        reply.read())
    finally:
        conn.close()


class Recording:
    """The requests the stand-in PostgREST received since the last `mark()`."""

    def __init__(self, path: Path):
        self.path, self.offset = path, 0

    def mark(self) -> None:
        self.offset = len(self.path.read_text().splitlines())

    def since(self) -> list[dict]:
        return [json.loads(line) for line in self.path.read_text().splitlines()[self.offset:]]

    def one(self) -> dict:
        got = self.since()
        assert len(got) == 1, got
        return got[0]


def as_request(conn, role: str, claims: dict | None, sql: str):
    """One statement as PostgREST runs a request (`SET LOCAL ROLE`, `request.jwt.claims`),
    rolled back afterwards. Returns the rows (or row count); InsufficientPrivilege (the
    class) when refused; "granted" when the privilege held but the row itself was invalid."""
    from psycopg import errors

    with conn.transaction(force_rollback=True):
        conn.execute("SELECT set_config('request.jwt.claims', %s, true)",
                     (json.dumps(claims) if claims else "",))
        conn.execute(f'SET LOCAL ROLE "{role}"')
        try:
            with conn.transaction():
                cursor = conn.execute(sql)
                return cursor.fetchall() if cursor.description else cursor.rowcount
        except errors.InsufficientPrivilege as exc:
            return type(exc)
        except (errors.NotNullViolation, errors.CheckViolation, errors.ForeignKeyViolation,
                errors.InvalidTextRepresentation):
            return "granted"


def started_dev_loop(source_name: str, tmp_path: Path, host, pg, redis, database: str):
    """`make dev` (DevLoop) started over a copy of an example's source (`product.proto` or
    `product.textproto`) in tmp_path/src, generating into tmp_path/generated; the test edits
    the copy through `loop.source` and stops the loop itself."""
    source = tmp_path / "src" / source_name
    source.parent.mkdir()
    shutil.copy(EXAMPLES_DIR / source_name.split(".")[0] / source_name, source)
    loop = DevLoop(source, tmp_path / "generated", host, pg, redis, database)
    loop.start()
    return loop
