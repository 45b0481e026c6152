"""Plugin parameters: `key=value` pairs separated by commas, as protoc and buf pass them.

Repeated keys accumulate (`target=postgres,target=openresty`); an unknown key or target is an
error rather than a silently ignored typo.
"""

from __future__ import annotations

from dataclasses import dataclass

from .targets import TARGETS

KNOWN = {"target": "select targets (repeatable); default: all of " + ", ".join(TARGETS)}


class ParameterError(ValueError):
    """A parameter the plugin does not understand."""


@dataclass(frozen=True)
class Parameters:
    targets: tuple[str, ...] | None


def parse(text: str) -> Parameters:
    values: dict[str, list[str]] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not value:
            raise ParameterError(f"plugin parameter {item!r} is not key=value")
        if key not in KNOWN:
            known = "; ".join(f"{k}: {v}" for k, v in KNOWN.items())
            raise ParameterError(f"unknown plugin parameter {key!r} (known: {known})")
        values.setdefault(key, []).append(value)
    targets = values.get("target")
    for target in targets or ():
        if target not in TARGETS:
            raise ParameterError(f"unknown target {target!r}; choose from "
                                 f"{', '.join(TARGETS)}")
    return Parameters(tuple(dict.fromkeys(targets)) if targets else None)
