"""GraphQL target: `graphql/`, the generated database served through PostGraphile v5.

PostGraphile reflects the PostgreSQL schema the postgres target writes, with the model
PostgREST uses: grants decide which queries and mutations exist, row-level security filters
rows, functions become query fields (STABLE) or mutations (VOLATILE). The files:

- `package.json` and `package-lock.json`: PostGraphile and its presets at exact versions
  (templates/static/graphql; scripts/setup.sh installs the same lock file for the tests and
  `make dev`, compose's `graphql` service into a volume);
- `auth.mjs`: the caller's role and claims from the bearer token, by PostgREST's rules for
  this backend (same secret or key set, audience, role and user claims);
- `graphile.config.mjs`: the preset of each API role;
- `server.mjs`: one schema per role, each introspected as that role, so what a role may not do
  is absent from its schema; a request runs on its role's schema as `SET LOCAL ROLE` with
  `request.jwt.claims`, the settings PostgREST sets, so the policies apply unchanged.

PostGraphile's own JWT preset (`lazy-jwt`) is not used: it writes v4-style `jwt.claims.*`
settings and expects its own audience.
"""

from __future__ import annotations

import re

from ..model import Backend
from ..rendering import GENERATED
from ..rendering import render as render_template
from ..resources import static_text
from .postgrest import JWKS_PATH

DIR = "graphql"
PORT = 5678
HOST = "graphql"  # the service name the gateway's upstream uses
AUDIT = ("created_at", "updated_at")  # implicit columns the audit trigger maintains
_UNITS = {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}


def body_bytes(size: str) -> int:
    """nginx's size syntax (`64k`, `1m`) in bytes."""
    number, unit = re.fullmatch(r"(\d+)([kKmMgG]?)", size).groups()
    return int(number) * _UNITS[unit.lower()]


def routes(backend: Backend) -> list[str]:
    """Where the gateway serves the API: `<base_path>/graphql` of each base path."""
    return sorted({e.base_path + "/graphql" for e in backend.entities})


def npm_files() -> dict[str, str]:
    return {f"{DIR}/{name}": static_text(f"graphql/{name}")
            for name in ("package.json", "package-lock.json")}


def render(backend: Backend) -> dict[str, str]:
    auth = backend.auth
    context = {
        "generated": GENERATED,
        "auth": auth,
        "role_claim_path": [list(step) for step in auth.role_claim_path],
        "jwks_path": JWKS_PATH,
        "schema": backend.database.schema,
        "roles": list(backend.api_roles),
        "port": PORT,
        "routes": routes(backend),
        "max_request_bytes": body_bytes(backend.rate_limit.max_body_size),
        "read_only": {e.name: [c.name for c in e.columns if c.implicit and c.name in AUDIT]
                      for e in backend.entities},
    }
    return {
        **npm_files(),
        f"{DIR}/auth.mjs": render_template("graphql/auth.mjs.j2", **context),
        f"{DIR}/graphile.config.mjs": render_template("graphql/graphile.config.mjs.j2",
                                                      **context),
        f"{DIR}/server.mjs": render_template("graphql/server.mjs.j2", **context),
    }
