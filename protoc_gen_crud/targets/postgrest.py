"""PostgREST target: `postgrest/postgrest.conf`, holding every setting except secrets.

Secrets never enter a generated file: PostgREST reads `PGRST_DB_URI` (the authenticator's
connection string, password included) and `PGRST_JWT_SECRET` from its environment, where they
override the file. The compose target makes them mandatory (`${VAR:?}`), so the stack refuses
to start without them.

For OAuth2 the JWKS is fetched into a file the config points at by `postgrest/jwks.py` (the
compose `jwks` one-shot), which checks every key the way PostgREST's JOSE library parses it:
PostgREST 12.2.3 silently treats a key set it cannot parse as one HMAC secret
(src/PostgREST/Config.hs@v12.2.3:459-467), so a bad key must stop the stack before it starts.
`PGRST_JWT_SECRET` then never reaches PostgREST's environment (it would replace the file); it
is added to the served key set as an `oct` key so that service tokens (`crud-gen --token`)
verify too.

`db-pre-request` names `crud_auth.check_request()` (migrations, 0002_roles.sql): PostgREST
runs it in each request's transaction after setting the role and `request.jwt.claims`
(src/PostgREST/Query.hs@v12.2.3:93-95), where it enforces `audience` and moves signed-in
callers without a role claim from the anonymous to the authenticated role.
"""

from __future__ import annotations

from ..model import Backend
from ..rendering import HEADER
from ..resources import static_text
from ..rules.auth import role_claim_key

ADMIN_PORT = 3001
SERVER_PORT = 3000
JWKS_DIR = "/run/jwks"
JWKS_PATH = JWKS_DIR + "/jwks.json"
JWKS_SCRIPT = "postgrest/jwks.py"
PRE_REQUEST = "crud_auth.check_request"
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
        "jwt-role-claim-key": role_claim_key(auth.role_claim_path),
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
    if auth.type != "NONE":
        values["db-pre-request"] = PRE_REQUEST
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
    files = {"postgrest/postgrest.conf": "\n".join(lines) + "\n"}
    if backend.auth.type == "OAUTH2":
        files[JWKS_SCRIPT] = static_text("jwks_fetch.py")
    return files
