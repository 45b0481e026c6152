"""PostgREST target: `postgrest/postgrest.conf`, holding every setting except secrets.

Secrets never enter a generated file: PostgREST reads `PGRST_DB_URI` (the authenticator's
connection string, password included) and `PGRST_JWT_SECRET` from its environment, where they
override the file. The compose target makes them mandatory (`${VAR:?}`), so the stack refuses
to start without them. For OAuth2 the JWKS is fetched into a file the config points at.
"""

from __future__ import annotations

from ..model import Backend
from ..rendering import HEADER

ADMIN_PORT = 3001
SERVER_PORT = 3000
JWKS_PATH = "/run/jwks/jwks.json"
SECRET_VARIABLES = ("PGRST_DB_URI", "PGRST_JWT_SECRET")


def settings(backend: Backend) -> dict[str, str | int | bool]:
    """PostgREST's settings as data; shared with the compose target."""
    auth, db = backend.auth, backend.database
    base = backend.entities[0].base_path if backend.entities else "/api/v1"
    values: dict[str, str | int | bool] = {
        "db-schemas": db.schema,
        "db-anon-role": auth.anon_role,
        "db-extra-search-path": db.schema,
        "db-max-rows": 1000,
        "db-pool": 10,
        "db-pool-acquisition-timeout": 10,
        "db-channel-enabled": True,
        "db-prepared-statements": True,
        "jwt-role-claim-key": "." + auth.role_claim,
        "jwt-secret-is-base64": False,
        "openapi-mode": "follow-privileges",
        "openapi-server-proxy-uri": f"http://localhost{base}",
        "server-host": "*",
        "server-port": SERVER_PORT,
        "admin-server-port": ADMIN_PORT,
        "log-level": "error",
    }
    if auth.audience:
        values["jwt-aud"] = auth.audience
    if auth.type == "OAUTH2":
        values["jwt-secret"] = "@" + JWKS_PATH  # a JWKS file, fetched from auth.jwks_url
    return dict(sorted(values.items()))


def required_environment(backend: Backend) -> tuple[str, ...]:
    """Variables PostgREST needs from its environment (secrets)."""
    if backend.auth.type in ("NONE", "OAUTH2"):
        return ("PGRST_DB_URI",)
    return SECRET_VARIABLES


def _value(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(backend: Backend) -> dict[str, str]:
    lines = [
        HEADER.rstrip("\n"),
        "# PostgREST settings. Secrets are not here: set "
        + " and ".join(required_environment(backend))
        + " in PostgREST's environment",
        "# (they override this file). The API roles and grants live in the migrations.",
    ]
    if backend.auth.type == "NONE":
        lines.append("# Authentication is off (AUTH_TYPE_NONE): every request runs as "
                     f"{backend.auth.anon_role}.")
    lines += [f"{key} = {_value(value)}" for key, value in settings(backend).items()]
    return {"postgrest/postgrest.conf": "\n".join(lines) + "\n"}
