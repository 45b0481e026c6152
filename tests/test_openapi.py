"""The OpenAPI document as the tools users run read it: Redocly's linter, openapi-typescript
and the TypeScript compiler (tests/node, installed by `npm ci`). The gateway test walks the
served document through real nginx (tests/test_gateway.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from protoc_gen_crud.targets.openapi import _schema_name

from .support import EXAMPLES, EXAMPLES_DIR, ROOT, from_textproto, model_of

NODE = ROOT / "tests" / "node"


def node(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["node", *argv], cwd=cwd, capture_output=True, text=True,
                          check=False, timeout=300)


@pytest.fixture(scope="module", params=EXAMPLES)
def document(request, tmp_path_factory) -> tuple[str, Path]:
    name = request.param
    folder = tmp_path_factory.mktemp(f"openapi-{name}")
    files = from_textproto(EXAMPLES_DIR / name / f"{name}.textproto", ["openapi"])
    (folder / "openapi.json").write_text(files["openapi/openapi.json"])
    (folder / "node_modules").symlink_to(NODE / "node_modules")
    return name, folder


def test_redocly_lints_it_without_errors(document):
    _, folder = document
    done = node(str(NODE / "node_modules/@redocly/cli/bin/cli.js"), "lint", "--format=json",
                "openapi.json", cwd=folder)
    report = json.loads(done.stdout[done.stdout.index("{"):])
    errors = [p for p in report["problems"] if p["severity"] == "error"]
    assert done.returncode == 0 and not errors, errors


USAGE = """
import createClient from "openapi-fetch";
import type {{ components, paths }} from "./api.js";

type Row = components["schemas"]["{schema}"];
const client = createClient<paths>({{ baseUrl: "http://localhost" }});

export async function firstRows(): Promise<Row[]> {{
  const {{ data, error }} = await client.GET("{route}", {{
    params: {{ query: {{ limit: 10, order: "{column}.desc" }} }},
  }});
  if (error !== undefined || data === undefined) {{
    throw new Error(String(error?.message));
  }}
  const value: {ts_type} = data[0].{column};
  console.log(value);
  return data;
}}
"""


def test_openapi_typescript_gives_types_that_compile(document):
    """openapi-typescript turns it into types; a usage file with openapi-fetch compiles under
    tsc --strict, with each column's TypeScript type the wire contract's (64-bit integers and
    decimals as strings); a wrong column name does not compile."""
    name, folder = document
    backend = model_of(name)
    entity = backend.entities[0]
    column = next(c for c in entity.columns if not c.nullable)
    ts_type = "string" if column.domain or column.kind in ("TEXT", "UUID") else {
        "INTEGER": "number", "SMALLINT": "number", "BIGSERIAL": "number", "SERIAL": "number",
        "REAL": "number", "DOUBLE": "number", "BOOLEAN": "boolean"}.get(column.kind, "string")
    done = node(str(NODE / "node_modules/openapi-typescript/bin/cli.js"), "openapi.json",
                "-o", "api.ts", cwd=folder)
    assert done.returncode == 0, done.stderr
    (folder / "package.json").write_text('{"type": "module"}\n')
    (folder / "tsconfig.json").write_text(json.dumps({"compilerOptions": {
        "strict": True, "noEmit": True, "module": "nodenext", "moduleResolution": "nodenext",
        "target": "es2022", "skipLibCheck": True}, "files": ["usage.ts"]}))
    usage = USAGE.format(schema=_schema_name(entity), route=entity.base_path + entity.path,
                         column=column.name, ts_type=ts_type)
    (folder / "usage.ts").write_text(usage)
    tsc = str(NODE / "node_modules/typescript/bin/tsc")
    done = node(tsc, "-p", ".", cwd=folder)
    assert done.returncode == 0, done.stdout + done.stderr
    (folder / "usage.ts").write_text(usage.replace(f"data[0].{column.name}",
                                                   "data[0].no_such_column"))
    wrong = node(tsc, "-p", ".", cwd=folder)
    assert wrong.returncode != 0 and "no_such_column" in wrong.stdout


def test_openapi_python_client_generates_a_package_that_imports(document):
    """openapi-python-client (PyPI) generates a client package from it that imports, with
    the entity models typed by the wire contract (a decimal column is a str)."""
    import importlib
    import os
    import sys

    name, folder = document
    backend = model_of(name)
    package = f"{name}_api_client"
    bin_dir = Path(sys.executable).parent
    done = subprocess.run(
        [str(bin_dir / "openapi-python-client"), "generate", "--path", "openapi.json",
         "--output-path", package, "--meta", "none"],
        cwd=folder, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
    assert done.returncode == 0, done.stdout + done.stderr
    sys.path.insert(0, str(folder))
    try:
        client = importlib.import_module(package)
        assert hasattr(client, "Client") and hasattr(client, "AuthenticatedClient")
        for entity in backend.entities:
            module = importlib.import_module(f"{package}.models.{entity.name}")
            model = getattr(module, _schema_name(entity))
            annotations = model.__annotations__
            for column in entity.columns:
                if column.wire == "decimal" and not column.nullable:
                    assert annotations[column.name] in (str, "str"), column.name
    finally:
        sys.path.remove(str(folder))
