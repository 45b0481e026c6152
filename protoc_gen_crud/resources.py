"""Where the shipped templates and .proto files are, installed or in a source checkout.

A wheel carries them inside the package (`protoc_gen_crud/templates`, `protoc_gen_crud/proto`);
an editable install or a plain checkout finds them at the repository root instead.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _find(name: str) -> Path:
    for candidate in (_PACKAGE / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"protoc-gen-crud is installed without its {name}/ folder")


def templates_dir() -> Path:
    return _find("templates")


def proto_include_dir() -> Path:
    """The folder holding crud/v1/options.proto, for `protoc -I`."""
    return _find("proto")


def static_text(name: str) -> str:
    """A file shipped as-is beside the templates (scripts copied into the output)."""
    return (templates_dir() / "static" / name).read_text()
