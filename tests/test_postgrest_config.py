"""postgrest.conf: PostgREST's own file format and keys, no secrets, values from the model.

PostgREST cannot be installed here, so its config is checked against the documented format
(`key = value`, values quoted strings, integers or booleans) and the documented keys.
"""

from __future__ import annotations

import re

import pytest

from protoc_gen_crud import builder, textproto

from .support import EXAMPLES, EXAMPLES_DIR, from_text, from_textproto

# PostgREST 12/13 configuration keys, from its configuration reference.
KNOWN_KEYS = {
    "admin-server-host", "admin-server-port", "db-aggregates-enabled", "db-anon-role",
    "db-channel", "db-channel-enabled", "db-config", "db-pre-config", "db-extra-search-path",
    "db-hoisted-tx-settings", "db-max-rows", "db-plan-enabled", "db-pool",
    "db-pool-acquisition-timeout", "db-pool-max-lifetime", "db-pool-max-idletime",
    "db-pool-automatic-recovery", "db-pre-request", "db-prepared-statements", "db-root-spec",
    "db-schemas", "db-tx-end", "db-uri", "jwt-aud", "jwt-role-claim-key", "jwt-secret",
    "jwt-secret-is-base64", "jwt-cache-max-lifetime", "log-level", "log-query", "openapi-mode",
    "openapi-security-active", "openapi-server-proxy-uri", "server-cors-allowed-origins",
    "server-host", "server-port", "server-trace-header", "server-timing-enabled",
    "server-unix-socket", "server-unix-socket-mode",
}
LINE = re.compile(r'^(?P<key>[a-z][a-z0-9.-]*) = (?P<value>"(?:[^"\\]|\\.)*"|-?\d+|true|false)$')


def parse(text: str) -> dict[str, object]:
    values: dict[str, object] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = LINE.match(line)
        assert match, f"not PostgREST's key = value syntax: {line!r}"
        raw = match["value"]
        value: object = (raw[1:-1].encode().decode("unicode_escape") if raw.startswith('"')
                         else raw == "true" if raw in ("true", "false") else int(raw))
        assert match["key"] not in values, f"duplicate key {match['key']}"
        values[match["key"]] = value
    return values


@pytest.mark.parametrize("name", EXAMPLES)
def test_postgrest_config(name):
    path = EXAMPLES_DIR / name / f"{name}.textproto"
    message, sources = textproto.load(path.read_text(), str(path))
    backend = builder.build(message, sources)
    text = from_textproto(path, ["postgrest"])["postgrest/postgrest.conf"]
    values = parse(text)
    assert set(values) <= KNOWN_KEYS, set(values) - KNOWN_KEYS
    assert values["db-schemas"] == backend.database.schema
    assert values["db-anon-role"] == backend.auth.anon_role
    # Always quoted: PostgREST's JSPath takes unquoted keys of [A-Za-z0-9_$@] only.
    assert values["jwt-role-claim-key"] == '."' + backend.auth.role_claim + '"'
    if backend.auth.type != "NONE":
        assert values["db-pre-request"] == "crud_auth.check_request"
    assert values["admin-server-port"] != values["server-port"]
    assert "db-uri" not in values, "the connection string (with its password) is a secret"
    assert "jwt-secret" not in values or str(values["jwt-secret"]).startswith("@")
    password = message.database.connection.password
    if password:
        assert password not in text.split("\n", 3)[-1]
    assert "PGRST_DB_URI" in text  # the header says where secrets come from


def test_oauth2_reads_a_jwks_file_and_audience():
    text = from_text("""
        entity { name: "note" fields { name: "body" type: SQL_TYPE_TEXT } }
        api { auth { type: AUTH_TYPE_OAUTH2 jwks_url: "https://id.example/jwks"
                     audience: "notes" role_claim: "app_role" } }
    """, targets=["postgrest"])["postgrest/postgrest.conf"]
    values = parse(text)
    assert values["jwt-secret"] == "@/run/jwks/jwks.json"
    assert values["jwt-aud"] == "notes"
    assert values["jwt-role-claim-key"] == '."app_role"'

