"""postgrest.conf as PostgREST 12.2.3 (the image compose pins) reads it.

PostgREST cannot be installed here, so its config reader is reproduced from its source at
that tag (src/PostgREST/Config.hs): the keys it reads, and how it coerces each value. Both
matter because the reader is forgiving in the wrong places: a key it does not read is
ignored, and an integer or boolean it cannot coerce is silently replaced by the default
(`optInt`/`optBool` are `join`ed Maybes, Config.hs:382-386), while an enumerated value it
does not know stops it at start.
"""

from __future__ import annotations

import re

import pytest

from protoc_gen_crud import builder, textproto

from .support import EXAMPLES, EXAMPLES_DIR, from_text, from_textproto

# Every key Config.hs@v12.2.3:241-291 reads (with its aliases), by how it reads the value.
INT_KEYS = {"db-max-rows", "max-rows", "db-pool", "db-pool-acquisition-timeout",
            "db-pool-max-lifetime", "db-pool-timeout", "db-pool-max-idletime",
            "jwt-cache-max-lifetime", "server-port", "admin-server-port",
            "internal-schema-cache-sleep"}
BOOL_KEYS = {"db-aggregates-enabled", "db-channel-enabled", "db-plan-enabled",
             "db-pool-automatic-recovery", "db-prepared-statements", "db-config",
             "jwt-secret-is-base64", "secret-is-base64", "openapi-security-active",
             "server-timing-enabled"}
ENUM_KEYS = {  # Config.hs:313-320, 337-346, 348-356
    "openapi-mode": {"follow-privileges", "ignore-privileges", "disabled"},
    "log-level": {"crit", "error", "warn", "info", "debug"},
    "db-tx-end": {"commit", "commit-allow-override", "rollback", "rollback-allow-override"},
}
STRING_KEYS = {"db-anon-role", "db-channel", "db-extra-search-path", "db-hoisted-tx-settings",
               "db-pre-request", "pre-request", "db-root-spec", "root-spec", "db-schemas",
               "db-schema", "db-pre-config", "db-uri", "jwt-aud", "jwt-role-claim-key",
               "role-claim-key", "jwt-secret", "openapi-server-proxy-uri",
               "server-cors-allowed-origins", "server-host", "server-trace-header",
               "server-unix-socket", "server-unix-socket-mode"}
KNOWN_KEYS = INT_KEYS | BOOL_KEYS | set(ENUM_KEYS) | STRING_KEYS
LINE = re.compile(r'^(?P<key>[a-z][a-z0-9.-]*) = (?P<value>"(?:[^"\\]|\\.)*"|-?\d+|true|false)$')


def coerce(key: str, value: object) -> object:
    """The value as PostgREST 12.2.3 reads it; an AssertionError where it would fall back
    to the default (ints, bools) or refuse to start (enumerations)."""
    if key.startswith("app.settings."):  # parseAppSettings, Config.hs:293-298
        return value
    assert key in KNOWN_KEYS, f"PostgREST 12.2.3 does not read {key!r} (it would be ignored)"
    if key in INT_KEYS:  # coerceInt, Config.hs:405-409: a number or a readable string
        ok = (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, str) and re.fullmatch(r"-?\d+", value))
        assert ok, f"{key} = {value!r} is not an integer: PostgREST would use its default"
        return int(value)
    if key in BOOL_KEYS:  # coerceBool, Config.hs:410-417
        if isinstance(value, bool):
            return value
        text = "".join(c for c in str(value) if c.isalpha()).title()
        assert text in ("True", "False"), \
            f"{key} = {value!r} is not a boolean: PostgREST would use its default"
        return text == "True"
    if key in ENUM_KEYS:
        assert value in ENUM_KEYS[key], f"{key} = {value!r}: PostgREST would not start"
    return value


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
    values = {key: coerce(key, value) for key, value in parse(text).items()}
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



@pytest.mark.parametrize(("line", "problem"), [
    ('db-pool = "ten"', "not an integer"),
    ("db-prepared-statements = 2", "not a boolean"),
    ('log-level = "verbose"', "would not start"),
    ('admin-server-host = "0.0.0.0"', "does not read"),  # PostgREST 13's key
    ('log-query = "main-query"', "does not read"),
])
def test_the_config_check_bites(line, problem):
    """Each of PostgREST 12.2.3's reading rules refuses what it should."""
    ((key, value),) = parse(line).items()
    with pytest.raises(AssertionError, match=problem):
        coerce(key, value)
