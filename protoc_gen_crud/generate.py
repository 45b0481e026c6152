"""Model to files: run the selected targets and merge their outputs."""

from __future__ import annotations

from collections.abc import Iterable

from .model import Backend
from .targets import TARGETS


def generate(backend: Backend, targets: Iterable[str] | None = None) -> dict[str, str]:
    """All files of the selected targets (all when None), keyed by relative path, sorted."""
    names = list(TARGETS) if targets is None else list(targets)
    files: dict[str, str] = {}
    for name in names:
        for path, text in TARGETS[name](backend).items():
            if path in files:
                raise RuntimeError(f"targets disagree about {path}")
            files[path] = text
    return dict(sorted(files.items()))
