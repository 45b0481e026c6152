"""Helpers shared by the tests: generating through each front door, running protoc."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from protoc_gen_crud import builder, textproto
from protoc_gen_crud.generate import generate
from protoc_gen_crud.resources import proto_include_dir

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


def protoc(proto: Path, out: Path, *, parameter: str = "", include: Path | None = None,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real protoc (from grpcio-tools) with our plugin on one file."""
    out.mkdir(parents=True, exist_ok=True)
    option = f"--crud_out={parameter + ':' if parameter else ''}{out}"
    return subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_include_dir()}",
         f"-I{include or proto.parent}", f"--plugin=protoc-gen-crud={PLUGIN}", option,
         str(proto.relative_to(include) if include else proto.name)],
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
