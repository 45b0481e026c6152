"""OpenResty gateway target: `openresty/nginx.conf` and its Lua module.

The gateway maps the REST shapes users expect onto PostgREST: `<base><path>` is the table,
`<base><path>/{id}` the single row (a filter on the primary key with PostgREST's singular
media type, its 406 for "no such row" turned into 404), and each custom endpoint its
`/rpc/` function. It answers CORS preflights, limits rates and body sizes, logs JSON and
counts requests per route for Prometheus on a separate, unpublished port.

The file runs as-is in the OpenResty image (Lua compiled in) and in Debian's nginx with the
Lua module, whose `load_module` lines belong to a wrapper, not to this file.

It also serves the API reference page at `<base>/docs`: Swagger UI, whose files come from npm
at the version pinned in `docs/package-lock.json` (installed beside nginx.conf as
`docs/node_modules` by compose's `docs` one-shot or by scripts/setup.sh for `make dev`),
never from a CDN and never copied into this project. The page's HTML and start script are
ours (templates/docs), kept in the Lua module like the OpenAPI document and the README it
links to, so a regenerated backend reloads with the gateway.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..aggregates import PIPELINE_ROLE
from ..model import Backend, Endpoint, Entity
from ..rendering import GENERATED
from ..rendering import render as render_template
from . import graphql, openapi
from .postgrest import SERVER_PORT
from .relay import ALIVE_KEY, ALIVE_SECONDS, TRIMMED_SUFFIX, topic

METRICS_PORT = 9145
# The unpublished server on METRICS_PORT also takes aggregation results for SSE channels.
INTERNAL_PORT = METRICS_PORT
LISTEN_PORT = 80
UPSTREAM_HOST = "crud"
TICK = "T"  # the action of the clock ticks an SSE client asks for with ?ticks=1
# The `retry:` each SSE connection gets is drawn from this range (ms), so that clients cut
# off together (a restart, a reload) do not all reconnect in the same instant.
SSE_RETRY_MS = (2000, 5000)
# How long an old worker may keep connections after a reload or a graceful stop. Its streams
# end on their own within a second (the worker's stream readers check ngx.worker.exiting()
# after each XREAD of at most a second, then wake their subscribers); this bounds the rest.
WORKER_SHUTDOWN_TIMEOUT_S = 5
# Where the reference page's npm project lives, in the output and beside nginx.conf (its
# node_modules/swagger-ui-dist holds the files the page loads).
DOCS_DIR = "docs"
DOCS_ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png")
# The reference page may load and call only its own origin: Swagger UI's files, its start
# script, the OpenAPI document, and "Try it out" requests to this gateway.
DOCS_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "font-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'")


@dataclass(frozen=True)
class Route:
    """One entity's routes as the gateway serves them."""

    name: str
    table: str
    collection: str  # e.g. /api/v1/products
    key: str  # single-column primary key, or "" when the key is composite
    columns: tuple[str, ...] = ()  # what a JSON body's keys may name


@dataclass(frozen=True)
class Stream:
    """One entity's SSE stream: its Redis stream and who may see which rows."""

    name: str
    topic: str
    owner: str
    shared_read: bool
    admins: tuple[str, ...]
    # Multi-tenancy: the tenant column ("" = none) and the roles that see every tenant.
    tenant: str = ""
    platform: tuple[str, ...] = ()


def routes(backend: Backend) -> list[Route]:
    return [Route(e.name, e.name, e.base_path + e.path, _single_key(e),
                  tuple(c.name for c in e.columns))
            for e in backend.entities]


def _single_key(entity: Entity) -> str:
    return entity.primary_key[0] if len(entity.primary_key) == 1 else ""


@dataclass(frozen=True)
class Channel:
    """An SSE channel of aggregation results: /stream/<name>, readable by the source's readers."""

    name: str
    topic: str
    entity: str
    max_len: int
    # The source's tenant column (its results carry it) and the roles that see every tenant.
    tenant: str = ""
    platform: tuple[str, ...] = ()


def streams(backend: Backend) -> list[Stream]:
    """The pipeline role reads whole change streams: aggregates need every row."""
    sources = {r.entity for r in backend.rules}
    return [Stream(e.name, topic(e.name), e.access.owner_column, e.access.shared_read,
                   tuple(sorted({*e.access.admin_roles,
                                 *((PIPELINE_ROLE,) if e.name in sources else ())})),
                   e.access.tenant_column, _platform(e, e.name in sources))
            for e in backend.streamed]


def _platform(entity: Entity, source: bool) -> tuple[str, ...]:
    """Who sees every tenant's events: the platform roles, and the pipeline role of an
    entity that feeds aggregations (they group by tenant themselves)."""
    if not entity.access.tenant_column:
        return ()
    return tuple(sorted({*entity.access.platform_roles, *((PIPELINE_ROLE,) if source else ())}))


def channels(backend: Backend) -> list[Channel]:
    found: dict[str, Channel] = {}
    for rule in backend.rules:
        if rule.sse_channel:
            name = rule.sse_channel.removeprefix("/stream/")
            entity = backend.entity(rule.entity)
            found.setdefault(name, Channel(name, f"crud.aggregate.{name}", entity.name,
                                           entity.stream_max_len, entity.access.tenant_column,
                                           _platform(entity, False)))
    return sorted(found.values(), key=lambda c: c.name)


def endpoint_methods(endpoint: Endpoint) -> str:
    return "GET|HEAD" if endpoint.method == "GET" else "POST"


def long_bracket(text: str) -> str:
    """The `=`s of a Lua long string that `text` cannot close early."""
    level = ""
    while f"]{level}]" in text:
        level += "="
    return level


def lua_long(text: str) -> str:
    """`text` as a Lua long string (its first newline is not part of the value)."""
    level = long_bracket(text)
    return f"[{level}[\n{text}]{level}]"


def docs_pages(backend: Backend, bases: list[str]) -> dict[str, str]:
    """The reference page of each base path, pointing at that base's document and assets."""
    return {base: render_template("docs/index.html.j2", generated=GENERATED, base=base,
                                  title=backend.database.name) for base in bases}


# What the gateway's /health checks with a TCP connect: the REST API (PostgREST) and the
# GraphQL API. Redis (PING) and crud-relay (its heartbeat key) are checked when something is
# streamed.
HEALTH_TCP = (("api", UPSTREAM_HOST, SERVER_PORT), ("graphql", graphql.HOST, graphql.PORT))


def health_parts(backend: Backend) -> list[str]:
    """The parts /health names, in its order."""
    return [name for name, _, _ in HEALTH_TCP] + (["redis", "relay"] if backend.streamed
                                                   else [])


def render(backend: Backend) -> dict[str, str]:
    # Imported here: the README reads compose's settings, and compose (through the
    # observability target) this module's ports.
    from . import readme

    rate = backend.rate_limit
    document = openapi.text(backend)
    bases = sorted({e.base_path for e in backend.entities})
    context = {
        "openapi_json": document,
        "openapi_level": long_bracket(document),
        "docs_pages": docs_pages(backend, bases),
        "docs_init": render_template("docs/init.js.j2", generated=GENERATED),
        "docs_readme": readme.text(backend),
        "docs_csp": DOCS_CSP,
        "docs_dir": DOCS_DIR,
        "docs_assets": DOCS_ASSETS,
        "lua_long": lua_long,
        "backend": backend,
        "routes": routes(backend),
        "endpoints": backend.endpoints,
        "endpoint_methods": endpoint_methods,
        "cors": backend.cors,
        "rate": rate,
        "retry_after": max(1, math.ceil(1 / rate.requests_per_second))
        if rate.requests_per_second else 1,
        "bases": bases,
        "upstream": f"{UPSTREAM_HOST}:{SERVER_PORT}",
        "graphql_upstream": f"{graphql.HOST}:{graphql.PORT}",
        "graphql_routes": graphql.routes(backend),
        "listen_port": LISTEN_PORT,
        "metrics_port": METRICS_PORT,
        "public_read": sorted(e.name for e in backend.entities
                              if backend.auth.anon_role in e.access.read),
        "streamed": streams(backend),
        "channels": channels(backend),
        "tick": TICK,
        "retry_min_ms": SSE_RETRY_MS[0],
        "retry_max_ms": SSE_RETRY_MS[1],
        "worker_shutdown_timeout": WORKER_SHUTDOWN_TIMEOUT_S,
        "trimmed_suffix": TRIMMED_SUFFIX,
        "health_tcp": HEALTH_TCP,
        "health_parts": health_parts(backend),
        "alive_key": ALIVE_KEY,
        "alive_seconds": ALIVE_SECONDS,
        "user_claim": backend.auth.user_claim,
        "tenant_claim": backend.auth.tenant_claim,
        "role_claim": backend.auth.role_claim,
        "role_claim_path": backend.auth.role_claim_path,
    }
    return {
        "openresty/nginx.conf": render_template("openresty/nginx.conf.j2", **context),
        "openresty/lua/crud_gateway.lua": render_template("openresty/crud_gateway.lua.j2",
                                                          **context),
    }
