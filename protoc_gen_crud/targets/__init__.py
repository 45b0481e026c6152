"""One module per infrastructure target; each turns the model into files.

A target is a function `render(backend) -> dict[path, text]`, paths relative to the output
directory. Targets read only the model.
"""

from __future__ import annotations

from collections.abc import Callable

from ..model import Backend
from . import (
    arroyo,
    compose,
    dapr,
    graphql,
    k8s,
    observability,
    openapi,
    openresty,
    postgres,
    postgrest,
    readme,
    relay,
)

Target = Callable[[Backend], dict[str, str]]

TARGETS: dict[str, Target] = {
    "postgres": postgres.render,
    "postgrest": postgrest.render,
    "openresty": openresty.render,
    "openapi": openapi.render,
    "graphql": graphql.render,
    "compose": compose.render,
    "relay": relay.render,
    "dapr": dapr.render,
    "arroyo": arroyo.render,
    "observability": observability.render,
    "k8s": k8s.render,
    "python_client": __import__(f"{__name__}.python_client", fromlist=["render"]).render,
    "readme": readme.render,
}
