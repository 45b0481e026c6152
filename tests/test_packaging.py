"""Packaging and hygiene: the wheel carries templates and protos, the gencode is current,
the options file lints as a documented API, and the code is ruff clean."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

from .support import BIN, ROOT


def test_wheel_ships_templates_and_protos(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    wheel = next(tmp_path.glob("protoc_gen_crud-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "protoc_gen_crud/proto/crud/v1/options.proto" in names
    assert "protoc_gen_crud/templates/postgres/entity.sql.j2" in names
    assert "protoc_gen_crud/gen/crud/v1/options_pb2.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "protoc-gen-crud = protoc_gen_crud.plugin:main" in scripts
    assert "crud-gen = protoc_gen_crud.cli:main" in scripts


def test_options_gencode_matches_the_proto(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'proto'}",
         f"--python_out={tmp_path}", "crud/v1/options.proto"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    fresh = (tmp_path / "crud" / "v1" / "options_pb2.py").read_text()
    committed = (ROOT / "protoc_gen_crud" / "gen" / "crud" / "v1" / "options_pb2.py").read_text()
    assert fresh == committed, "regenerate with scripts/regen-options.sh"


def test_buf_lint_standard_and_comments():
    env = {**os.environ, "BUF_CACHE_DIR": str(ROOT / ".tmp" / "buf-cache")}
    done = subprocess.run([str(BIN / "buf"), "lint"], cwd=ROOT, capture_output=True, text=True,
                          env=env)
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_clean():
    done = subprocess.run([str(BIN / "ruff"), "check", "."], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout
