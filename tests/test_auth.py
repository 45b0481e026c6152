"""OAuth2 and JWT as PostgREST 12.2.3 applies them, with tokens signed here by keys made here.

PostgREST cannot run on this machine, so each step it takes is reproduced from its source at
the pinned tag and named where it is done:
- the key set: the compose `jwks` one-shot's own command runs (as its unprivileged user, on a
  folder prepared by the `tools` one-shot's own command) against a local server, and its
  checks are held to jose 0.11's parsing rules key by key;
- the token: verified against the written key set, every key tried (jose's JWKSet store),
  `aud` compared only when present (src/PostgREST/Auth.hs@v12.2.3:67-71);
- the role: the claim at `jwt-role-claim-key`, parsed with PostgREST's JSPath grammar
  (src/PostgREST/Config/JSPath.hs@v12.2.3:35-51), else `db-anon-role`, and written back into
  the claims as `role` (Auth.hs:79-86);
- the database: as the authenticator login, one statement setting `role`,
  `request.jwt.claims` and `request.headers`, then the `db-pre-request` function, then the
  request's statement, in one transaction (src/PostgREST/Query.hs@v12.2.3:93-95, 284-297);
  a `RAISE SQLSTATE 'PGRST'` becomes the HTTP status and headers its JSON says
  (src/PostgREST/Error.hs@v12.2.3:411-416, 512-513, 598-603).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import jwt
import psycopg
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from psycopg import errors

from protoc_gen_crud import builder, textproto

from .support import ROOT, call, from_textproto, model_of, serving_gateway, write_tree
from .test_postgrest_config import parse as parse_postgrest_conf

SCRIPT = ROOT / "templates" / "static" / "jwks_fetch.py"
AUDIENCE = "https://api.notes.example"
ROLE_CLAIM = "https://notes.example/role"
SECRET = "a-service-secret-of-at-least-32-bytes!"
CONFIG = """
database {{ name: "notes" schema: "notes" }}
api {{ auth {{ type: AUTH_TYPE_OAUTH2 jwks_url: "{url}" audience: "{audience}"
             role_claim: "{role_claim}" }} }}
entity {{
  name: "note"
  fields {{ name: "body" type: SQL_TYPE_TEXT }}
  api {{ entity_path: "/notes" access {{ read: ["anon", "authenticated", "editor"]
         create: ["authenticated", "editor"] update: ["editor"] delete: ["editor"] }} }}
}}
entity {{
  name: "draft"
  fields {{ name: "body" type: SQL_TYPE_TEXT }}
  api {{ entity_path: "/drafts" access {{ read: ["editor"] create: ["editor"]
         update: ["editor"] delete: ["editor"] }} }}
}}
"""
STATEMENTS = {
    "read": "SELECT count(*) FROM {t}",
    "create": "INSERT INTO {t} DEFAULT VALUES",
    "update": "UPDATE {t} SET updated_at = now()",
    "delete": "DELETE FROM {t}",
}


def load_checker():
    spec = importlib.util.spec_from_file_location("jwks_fetch", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


checker = load_checker()


# ------------------------------------------------------------------------------ keys
def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def uint(value: int, size: int | None = None) -> str:
    size = size or max(1, (value.bit_length() + 7) // 8)
    return b64(value.to_bytes(size, "big"))


def rsa_jwk(key: rsa.RSAPrivateKey, kid: str, **extra) -> dict:
    numbers = key.public_key().public_numbers()
    return {"kty": "RSA", "kid": kid, "n": uint(numbers.n), "e": uint(numbers.e), **extra}


EC_SIZES = {"P-256": (ec.SECP256R1, 32), "P-384": (ec.SECP384R1, 48),
            "P-521": (ec.SECP521R1, 66), "secp256k1": (ec.SECP256K1, 32)}


def ec_jwk(key: ec.EllipticCurvePrivateKey, crv: str, kid: str, **extra) -> dict:
    numbers = key.public_key().public_numbers()
    size = EC_SIZES[crv][1]
    return {"kty": "EC", "crv": crv, "kid": kid, "x": uint(numbers.x, size),
            "y": uint(numbers.y, size), **extra}


def self_signed(key) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "id.notes.example")])
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(7).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=3650))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


class Keys:
    """The identity provider of these tests: an RS256 key (published with its certificate,
    as Keycloak and Auth0 do), an ES256 key and an encryption key."""

    def __init__(self):
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.enc = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        der = self_signed(self.rsa)
        self.jwks = {"keys": [
            rsa_jwk(self.rsa, "rsa-1", alg="RS256", use="sig",
                    x5c=[base64.b64encode(der).decode()],
                    x5t=b64(hashlib.sha1(der).digest()),
                    **{"x5t#S256": b64(hashlib.sha256(der).digest())}),
            ec_jwk(self.ec, "P-256", "ec-1", alg="ES256", use="sig"),
            rsa_jwk(self.enc, "enc-1", alg="RSA-OAEP", use="enc"),
        ]}

    def sign(self, algorithm: str, claims: dict) -> str:
        key, kid = (self.rsa, "rsa-1") if algorithm == "RS256" else (self.ec, "ec-1")
        return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid})


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


class Documents(BaseHTTPRequestHandler):
    documents: ClassVar[dict[str, bytes]] = {}

    def do_GET(self) -> None:
        body = self.documents.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body or b"{}")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def idp(test_host):
    """The identity provider's JWKS address, on the test namespace's loopback."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Documents)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


# ---------------------------------------------- the compose one-shots, as compose runs them
def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR:-default} and ${VAR:?message}."""
    def one(match: re.Match) -> str:
        name, kind, rest = match.group(1), match.group(2), match.group(3)
        if env.get(name):
            return env[name]
        if kind == ":?":
            raise AssertionError(f"compose would refuse to start: {rest}")
        return rest
    return re.sub(r"\$\{(\w+)(:-|:\?)([^}]*)\}", one, value)


def container_command(service: dict, mounts: dict[str, str], binaries: dict[str, str]) -> list:
    """The service's command with container paths replaced by the host paths mounted there."""
    def host(arg: str) -> str:
        for inside, outside in sorted(mounts.items(), key=lambda m: -len(m[0])):
            if arg == inside or arg.startswith(inside + "/"):
                return outside + arg[len(inside):]
        return binaries.get(arg, arg)
    return [host(arg) if not arg.startswith("cp ") else
            " ".join(host(word) for word in arg.split(" ")) for arg in service["command"]]


class Compose:
    """A generated tree and its jwks and tools services, run on this machine the way compose
    runs them: the same commands, users and environment; volumes are folders."""

    def __init__(self, files: dict[str, str]):
        self.root = Path(tempfile.mkdtemp(prefix="crud-jwks-"))
        self.root.chmod(0o755)  # the unprivileged user must reach the mounted files
        self.tree = write_tree(files, self.root / "generated")
        for folder in (self.tree, *self.tree.rglob("*")):
            folder.chmod(0o755 if folder.is_dir() else 0o644)
        self.services = yaml.safe_load(files["compose.yml"])["services"]
        self.volumes: dict[str, Path] = {}

    def volume(self, name: str) -> Path:
        """A fresh named volume: an empty folder owned by root, mode 755, as Docker makes."""
        if name not in self.volumes:
            path = self.root / "volumes" / name
            path.mkdir(parents=True)
            os.chown(path, 0, 0)
            path.chmod(0o755)
            self.volumes[name] = path
        return self.volumes[name]

    def mounts(self, service: dict) -> dict[str, str]:
        found = {}
        for spec in service.get("volumes", []):
            source, target = spec.split(":")[:2]
            found[target] = str(self.tree / source[2:] if source.startswith("./")
                                else self.volume(source))
        return found

    def run(self, netns, name: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        service = self.services[name]
        busybox = self.root / "busybox"
        busybox.write_text("stand-in for the image's /bin/busybox\n")
        command = container_command(service, self.mounts(service),
                                    {"python": "/usr/bin/python3", "/bin/busybox": str(busybox)})
        user = service.get("user")
        if user:
            uid, gid = user.split(":")
            command = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                       *command]
        environment = {"PATH": "/usr/bin:/bin", **{
            key: interpolate(value, env) for key, value in service.get("environment",
                                                                        {}).items()}}
        return netns.run(*command, env=environment, timeout=120)

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def generate(url: str) -> dict[str, str]:
    backend, sources = textproto.load(CONFIG.format(url=url, audience=AUDIENCE,
                                                    role_claim=ROLE_CLAIM), "notes.textproto")
    from protoc_gen_crud.generate import generate as generate_files
    return generate_files(builder.build(backend, sources))


@pytest.fixture(scope="module")
def served(test_host, idp, keys):
    """The key set as the compose one-shots leave it for PostgREST, and the generated tree."""
    Documents.documents["/jwks.json"] = json.dumps(keys.jwks).encode()
    files = generate(idp + "/jwks.json")
    compose = Compose(files)
    try:
        tools = compose.run(test_host, "tools", {})
        assert tools.returncode == 0, tools.stderr
        done = compose.run(test_host, "jwks", {"PGRST_JWT_SECRET": SECRET})
        assert done.returncode == 0, done.stderr
        written = compose.volumes["jwks"] / "jwks.json"
        assert written.stat().st_uid == 65534, "written by the unprivileged user"
        yield json.loads(written.read_text()), files
    finally:
        compose.cleanup()


# ------------------------------------------------------------------ (a) the one-shot
def test_the_jwks_one_shot_runs_unprivileged_and_serves_the_providers_keys(served, keys):
    key_set, files = served
    services = yaml.safe_load(files["compose.yml"])["services"]
    assert services["jwks"]["user"] != "0" and not services["jwks"]["user"].startswith("0:")
    assert "PGRST_JWT_SECRET" not in services["crud"].get("environment", {}), \
        "in PostgREST's environment it would replace the key set"
    conf = parse_postgrest_conf(files["postgrest/postgrest.conf"])
    assert conf["jwt-secret"] == "@" + services["jwks"]["command"][3]
    by_kid = {k["kid"]: k for k in key_set["keys"]}
    for published in keys.jwks["keys"]:
        assert by_kid[published["kid"]] == published
    assert checker.check_set(key_set) == []
    service = by_kid[checker.SERVICE_KID]
    assert service["kty"] == "oct"
    assert base64.urlsafe_b64decode(service["k"] + "==") == SECRET.encode()


def test_a_fresh_root_owned_volume_stops_the_unprivileged_one_shot(test_host, idp, keys):
    """The failure the tools step prevents: without it the one-shot cannot write."""
    Documents.documents["/jwks.json"] = json.dumps(keys.jwks).encode()
    compose = Compose(generate(idp + "/jwks.json"))
    try:
        done = compose.run(test_host, "jwks", {})
        assert done.returncode != 0
        assert "Permission denied" in done.stderr
        assert not (compose.volumes["jwks"] / "jwks.json").exists()
    finally:
        compose.cleanup()


# ------------------------------------------------------------------ (d) one bad key
def test_a_jwks_with_one_bad_key_is_refused_naming_it(test_host, idp, keys):
    bad = json.loads(json.dumps(keys.jwks))
    bad["keys"][1]["y"] = uint(int.from_bytes(base64.urlsafe_b64decode(
        bad["keys"][1]["y"] + "=="), "big") ^ 1, 32)
    Documents.documents["/bad.json"] = json.dumps(bad).encode()
    compose = Compose(generate(idp + "/bad.json"))
    try:
        assert compose.run(test_host, "tools", {}).returncode == 0
        done = compose.run(test_host, "jwks", {"PGRST_JWT_SECRET": SECRET})
        assert done.returncode == 1
        assert "key #1 (kid 'ec-1'): the point (x, y) is not on the curve P-256" in done.stderr
        assert "HMAC secret" in done.stderr
        assert not (compose.volumes["jwks"] / "jwks.json").exists(), "nothing written"
    finally:
        compose.cleanup()


def test_a_short_service_secret_is_refused(test_host, idp, keys):
    Documents.documents["/jwks.json"] = json.dumps(keys.jwks).encode()
    compose = Compose(generate(idp + "/jwks.json"))
    try:
        assert compose.run(test_host, "tools", {}).returncode == 0
        done = compose.run(test_host, "jwks", {"PGRST_JWT_SECRET": "too-short"})
        assert done.returncode == 1 and "HS256 needs 32 or more" in done.stderr
    finally:
        compose.cleanup()


def _key(kind: str) -> dict:
    if kind == "rsa":
        return rsa_jwk(rsa.generate_private_key(public_exponent=65537, key_size=2048), "k")
    if kind in EC_SIZES:
        return ec_jwk(ec.generate_private_key(EC_SIZES[kind][0]()), kind, "k")
    if kind == "okp":
        raw = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": b64(raw)}
    return {"kty": "oct", "k": b64(os.urandom(32))}


def _other_cert() -> str:
    return base64.b64encode(self_signed(rsa.generate_private_key(65537, 2048))).decode()


# Each case: a key, and what jose 0.11 does with it (None: accepted). The rule is named.
CASES = {
    "rsa": (lambda: _key("rsa"), None),
    "p256": (lambda: _key("P-256"), None),
    "p384": (lambda: _key("P-384"), None),
    "p521": (lambda: _key("P-521"), None),
    "secp256k1": (lambda: _key("secp256k1"), None),
    "ed25519": (lambda: _key("okp"), None),
    "oct": (lambda: _key("oct"), None),
    "null members are absent (aeson .:?)": (
        lambda: {**_key("rsa"), "use": None, "alg": None, "kid": None}, None),
    "unknown members are ignored": (lambda: {**_key("rsa"), "issuer": "x"}, None),
    # JWA/JWK.hs:557-565
    "no kty": (lambda: {k: v for k, v in _key("rsa").items() if k != "kty"}, 'missing "kty"'),
    "unknown kty": (lambda: {**_key("rsa"), "kty": "rsa"}, 'unsupported "kty"'),
    # JWA/JWK.hs:116, 211-222 and Types.hs checkSize
    "unknown curve": (lambda: {**_key("P-256"), "crv": "P-255"}, '"crv"'),
    "short coordinate": (lambda: {**_key("P-256"), "x": b64(b"\1" * 31)}, "needs exactly 32"),
    # Types/Internal.hs:90-105 (base64-bytestring decodeUnpadded)
    "padded base64url": (lambda: {**_key("rsa"), "e": "AQAB=="}, "unpadded base64url"),
    "standard alphabet": (lambda: {**_key("oct"), "k": "ab+/"}, "unpadded base64url"),
    # "AR" is the byte 1 with a stray bit in the unused low bits of "R"
    "non-canonical": (lambda: {**_key("rsa"), "e": "AR"}, "not canonical"),
    # Types.hs parseOctets
    "leading zero": (lambda: {**_key("rsa"), "e": b64(b"\0\1\0\1")}, "leading zero byte"),
    "empty integer": (lambda: {**_key("rsa"), "e": ""}, "is empty"),
    # JWK.hs:141-151 (deriveJOSEType: exact strings)
    "use": (lambda: {**_key("rsa"), "use": "signature"}, '"use"'),
    "key_ops": (lambda: {**_key("rsa"), "key_ops": ["verify", "check"]}, '"key_ops"'),
    "alg": (lambda: {**_key("rsa"), "alg": "RS257"}, '"alg"'),
    "kid": (lambda: {**_key("rsa"), "kid": 7}, '"kid"'),
    # JWK.hs:201: x5u is read with .:! , so null is not "absent"
    "x5u null": (lambda: {**_key("rsa"), "x5u": None}, '"x5u"'),
    "x5t size": (lambda: {**_key("rsa"), "x5t": b64(b"\0" * 19)}, '"x5t"'),
    "x5c empty": (lambda: {**_key("rsa"), "x5c": []}, '"x5c"'),
    # JWK.hs:206-210
    "x5c of another key": (lambda: {**_key("rsa"), "x5c": [_other_cert()]}, "does not match"),
    "x5c on an oct key": (lambda: {**_key("oct"), "x5c": [_other_cert()]}, "does not match"),
    # JWA/JWK.hs:475-490
    "okp curve": (lambda: {**_key("okp"), "crv": "Ed25518"}, "unrecognised OKP"),
    "okp size": (lambda: {**_key("okp"), "x": b64(b"\1" * 31)}, "Ed25519 public keys have 32"),
    # refused on purpose, although jose would take it
    "private key": (lambda: {**_key("rsa"), "d": "AQAB"}, "private key parameters"),
}


@pytest.mark.parametrize("case", CASES)
def test_each_key_is_checked_as_jose_parses_it(case):
    make, expected = CASES[case]
    problems = checker.check_set({"keys": [_key("rsa"), make()]})
    if expected is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problems[0].startswith("key #1"), problems
        assert expected in problems[0], problems


def test_a_matching_certificate_is_accepted():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = base64.b64encode(self_signed(key)).decode()
    assert checker.check_set({"keys": [rsa_jwk(key, "k", x5c=[cert])]}) == []
    ec_key = ec.generate_private_key(ec.SECP384R1())
    ec_cert = base64.b64encode(self_signed(ec_key)).decode()
    assert checker.check_set({"keys": [ec_jwk(ec_key, "P-384", "k", x5c=[ec_cert])]}) == []


def test_not_a_key_set():
    assert checker.check_set([]) and checker.check_set({"keys": []})


# ------------------------------------------------------------------ (c) the role claim path
def parse_jspath(text: str) -> list[tuple[str, object]] | None:
    """PostgREST 12.2.3's role-claim-key grammar (Config/JSPath.hs:35-51): one or more
    `.key` or `.key[n]`; a key is [alphanumeric _ $ @]+ or "anything but a quote"."""
    at, path = 0, []
    if not text.startswith("."):
        return None
    while at < len(text):
        if text[at] != ".":
            return None
        at += 1
        bare = re.match(r"[\w$@]+", text[at:])  # Parsec's alphaNum is Unicode's
        if bare:
            key = bare.group(0)
            at += len(key)
        elif text[at:at + 1] == '"':
            end = text.find('"', at + 1)
            if end < 0:
                return None
            key, at = text[at + 1:end], end + 1
        else:
            return None
        path.append(("key", key))
        index = re.match(r"\[(\d+)\]", text[at:])
        if index:
            path.append(("index", int(index.group(1))))
            at += len(index.group(0))
    return path


def test_a_url_role_claim_is_one_quoted_key(served):
    _, files = served
    key = parse_postgrest_conf(files["postgrest/postgrest.conf"])["jwt-role-claim-key"]
    assert parse_jspath(key) == [("key", ROLE_CLAIM)]
    assert parse_jspath("." + ROLE_CLAIM) is None, "unquoted, PostgREST would not start"


NESTED = """
database { name: "nested" schema: "nested" }
api { auth { type: AUTH_TYPE_JWT audience: "api" role_claim: ".realm_access.roles[0]" } }
entity {
  name: "draft"
  fields { name: "body" type: SQL_TYPE_TEXT }
  api { entity_path: "/drafts" access { read: ["authenticated", "editor"] create: ["editor"]
        update: ["editor"] delete: ["editor"] } }
}
"""


def test_a_nested_role_claim_path(pg, tmp_path):
    """Keycloak puts roles in `realm_access.roles`: role_claim `.realm_access.roles[0]` is
    written as PostgREST's JSPath, the pre-request check looks for the role there, and
    `crud-gen --token` nests its role the same way."""
    from protoc_gen_crud.cli import service_token

    from .conftest import Database
    from .support import from_text

    files = from_text(NESTED, targets=["postgres", "postgrest"])
    conf = parse_postgrest_conf(files["postgrest/postgrest.conf"])
    assert parse_jspath(conf["jwt-role-claim-key"]) == [
        ("key", "realm_access"), ("key", "roles"), ("index", 0)]
    database = Database(pg, "auth_nested")
    assert database.migrate(files, tmp_path).returncode == 0
    key_set = {"keys": [{"kty": "oct", "k": b64(SECRET.encode())}]}
    delete = 'DELETE FROM "nested"."draft"'
    for persona, claims, role in (
            ("editor", {"sub": "ed", "aud": "api", "realm_access": {"roles": ["editor"]}},
             "editor"),
            ("no roles", {"sub": "carol", "aud": "api", "realm_access": {"roles": []}},
             "authenticated"),
            ("no realm_access", {"sub": "dan", "aud": "api"}, "authenticated"),
            ("no sub", {"aud": "api"}, "anon")):
        token = jwt.encode(claims, SECRET, algorithm="HS256")
        verified = postgrest_claims(token, key_set, conf)
        assert postgrest_request(database, conf, verified, token, "SELECT current_user") == [
            (role,)], persona
        outcome = postgrest_request(database, conf, verified, token, delete)
        assert (outcome is errors.InsufficientPrivilege) == (role != "editor"), persona
    backend = builder.build(*textproto.load(NESTED, "nested.textproto"))
    token = service_token("editor", SECRET, backend.auth.role_claim_path, "api")
    assert jwt.decode(token, SECRET, algorithms=["HS256"], audience="api")[
        "realm_access"] == {"roles": ["editor"]}
    assert postgrest_claims(token, key_set, conf)["role"] == "editor"


# ------------------------------------------------------------- PostgREST's steps, reproduced
def postgrest_claims(token: str, key_set: dict, conf: dict) -> dict | int:
    """Auth.hs: 401 unless some key of the set verifies the token and a present `aud`
    equals jwt-aud; otherwise the claims with `role` set to the role PostgREST uses."""
    algorithm = jwt.get_unverified_header(token)["alg"]
    claims = None
    for key in key_set["keys"]:
        try:
            claims = jwt.decode(token, jwt.PyJWK(key, algorithm).key, algorithms=[algorithm],
                                options={"verify_aud": False})
            break
        except (jwt.PyJWTError, ValueError, TypeError):
            continue
    if claims is None:
        return 401
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if "aud" in claims and conf.get("jwt-aud") not in audiences:
        return 401
    value: object = claims
    for kind, step in parse_jspath(conf["jwt-role-claim-key"]):
        ok = isinstance(value, dict) if kind == "key" else isinstance(value, list)
        value = (value.get(step) if kind == "key" else
                 value[step] if step < len(value) else None) if ok else None
    role = conf["db-anon-role"] if value is None else (
        value if isinstance(value, str) else json.dumps(value))
    return {**claims, "role": role}


def postgrest_request(database, conf: dict, claims: dict | None, token: str | None,
                      sql: str):
    """One request's transaction as PostgREST runs it, as the authenticator login."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    claims = claims or {"role": conf["db-anon-role"]}
    dsn = database.server.dsn(database.name, user="authenticator")
    with psycopg.connect(dsn, autocommit=True) as conn, \
            conn.transaction(force_rollback=True):
        conn.execute("SELECT set_config('role', %s, true), "
                     "set_config('request.jwt.claims', %s, true), "
                     "set_config('request.headers', %s, true)",
                     (claims["role"], json.dumps(claims), json.dumps(headers)))
        try:
            with conn.transaction():
                conn.execute(f"SELECT {conf['db-pre-request']}()")
                cursor = conn.execute(sql)
                return cursor.fetchall() if cursor.description else cursor.rowcount
        except errors.InsufficientPrivilege as exc:
            return type(exc)
        except (errors.NotNullViolation, errors.CheckViolation):
            return "granted"
        except psycopg.Error as exc:
            if exc.sqlstate != "PGRST":
                raise
            detail = json.loads(exc.diag.message_detail)
            return (detail["status"], detail["headers"],
                    json.loads(exc.diag.message_primary)["message"])


@pytest.fixture(scope="module")
def notes_db(pg, served, tmp_path_factory):
    from .conftest import Database

    _, files = served
    database = Database(pg, "auth_notes")
    done = database.migrate(files, tmp_path_factory.mktemp("notes"))
    assert done.returncode == 0, done.stderr
    return database


def effective_role(claims: dict) -> str:
    """The documented rule (README, Authentication): the role claim's role; a signed-in
    caller (`sub`) without one is authenticated; anyone else anon."""
    if ROLE_CLAIM in claims:
        return claims[ROLE_CLAIM]
    return "authenticated" if claims.get("sub") else "anon"


PERSONAS = {
    "role claim authenticated": {"sub": "alice", "aud": AUDIENCE, ROLE_CLAIM: "authenticated"},
    "role claim editor": {"sub": "ed", "aud": [AUDIENCE, "other"], ROLE_CLAIM: "editor"},
    "no role claim": {"sub": "carol", "aud": AUDIENCE},
    "role claim anon": {"sub": "eve", "aud": AUDIENCE, ROLE_CLAIM: "anon"},
    "no role claim, no sub": {"aud": AUDIENCE},
}


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_permission_matrix_with_provider_tokens(algorithm, served, keys, notes_db):
    key_set, files = served
    conf = parse_postgrest_conf(files["postgrest/postgrest.conf"])
    backend = builder.build(*textproto.load(CONFIG.format(
        url="http://x/jwks.json", audience=AUDIENCE, role_claim=ROLE_CLAIM), "n.textproto"))
    cases = {**PERSONAS, "no token": None}
    checked = 0
    for persona, wanted in cases.items():
        token = keys.sign(algorithm, wanted) if wanted is not None else None
        claims = postgrest_claims(token, key_set, conf) if token else None
        assert claims != 401, persona
        role = effective_role(wanted or {})
        assert postgrest_request(notes_db, conf, claims, token, "SELECT current_user") == \
            [(role,)], persona
        for entity in backend.entities:
            for operation, sql in STATEMENTS.items():
                allowed = role in getattr(entity.access, operation)
                outcome = postgrest_request(notes_db, conf, claims, token, sql.format(
                    t=f'"notes"."{entity.name}"'))
                assert (outcome is errors.InsufficientPrivilege) != allowed, \
                    (persona, entity.name, operation, outcome)
                checked += 1
    assert checked == len(cases) * len(backend.entities) * len(STATEMENTS)


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_a_token_without_aud_is_refused(algorithm, served, keys, notes_db):
    key_set, files = served
    conf = parse_postgrest_conf(files["postgrest/postgrest.conf"])
    token = keys.sign(algorithm, {"sub": "mallory", ROLE_CLAIM: "editor"})
    claims = postgrest_claims(token, key_set, conf)
    assert isinstance(claims, dict), "PostgREST itself accepts a token without aud"
    status, headers, message = postgrest_request(notes_db, conf, claims, token,
                                                 'SELECT count(*) FROM "notes"."note"')
    assert status == 401 and AUDIENCE in message
    assert headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
    wrong = keys.sign(algorithm, {"sub": "mallory", "aud": "other", ROLE_CLAIM: "editor"})
    assert postgrest_claims(wrong, key_set, conf) == 401


def test_a_token_signed_by_another_key_is_refused(served):
    key_set, files = served
    conf = parse_postgrest_conf(files["postgrest/postgrest.conf"])
    stranger = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode({"sub": "x", "aud": AUDIENCE}, stranger, algorithm="ES256",
                       headers={"kid": "ec-1"})
    assert postgrest_claims(token, key_set, conf) == 401


# ------------------------------------------------------------------ (b) service tokens
def test_service_tokens_verify_under_oauth2(served, notes_db, tmp_path):
    key_set, files = served
    conf = parse_postgrest_conf(files["postgrest/postgrest.conf"])
    config = tmp_path / "notes.textproto"
    config.write_text(CONFIG.format(url="http://x/jwks.json", audience=AUDIENCE,
                                    role_claim=ROLE_CLAIM))
    done = subprocess.run([sys.executable, "-m", "protoc_gen_crud.cli", str(config),
                           "--token", "editor"], capture_output=True, text=True,
                          env={**os.environ, "PGRST_JWT_SECRET": SECRET})
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert jwt.decode(token, SECRET, algorithms=["HS256"], audience=AUDIENCE) == {
        ROLE_CLAIM: "editor", "aud": AUDIENCE}
    claims = postgrest_claims(token, key_set, conf)
    assert claims["role"] == "editor"
    assert postgrest_request(notes_db, conf, claims, token,
                             'DELETE FROM "notes"."draft"') == 0
    without_key = {"keys": [k for k in key_set["keys"] if k["kty"] != "oct"]}
    assert postgrest_claims(token, without_key, conf) == 401, "only the oct key verifies it"


# ------------------------------------------------------------------ (g) the stream probe
@pytest.fixture(scope="module")
def gateway(test_host, recording, tmp_path_factory):
    out = write_tree(from_textproto(ROOT / "testdata" / "examples" / "product" /
                                    "product.textproto"), tmp_path_factory.mktemp("gw"))
    with serving_gateway(test_host, out / "openresty"):
        yield model_of("product")


def test_the_stream_probe_passes_postgrests_verdict_through(gateway, test_host, recording):
    entity = gateway.streamed[0].name
    path = f"/stream/sse/{entity}"
    expired = call(test_host, "GET", path, {"Authorization": "Bearer expired"})
    assert expired.status == 401
    assert expired.headers["www-authenticate"] == \
        'Bearer error="invalid_token", error_description="JWT expired"'
    # A browser's token comes in the cookie of POST /stream/session: judged the same way.
    by_cookie = call(test_host, "GET", path, {"Cookie": "crud_stream_token=expired"})
    assert by_cookie.status == 401 and "www-authenticate" in by_cookie.headers
    # A token in the URL would reach nginx's error log: refused before anything is asked.
    recording.mark()
    by_query = call(test_host, "GET", path + "?access_token=expired")
    assert by_query.status == 400 and "access_token" in by_query.json()["message"]
    assert recording.since() == []
    assert call(test_host, "GET", path, {"Authorization": "Bearer forbidden"}).status == 403
    ghost = call(test_host, "GET", path, {"Authorization": "Bearer ghost-role"})
    assert ghost.status == 403 and ghost.json()["code"] == "forbidden"
    # PostgREST unavailable is transient: a stream that only says when to retry (a 503 would
    # end a browser's EventSource for good; tests/test_gateway.py checks the stream itself).
    down = call(test_host, "GET", path, {"Authorization": "Bearer db-down"})
    assert down.status == 200 and down.headers["content-type"] == "text/event-stream"
    assert down.body.decode().startswith("retry: ") and "data:" not in down.body.decode()


# ------------------------------------------------------------------ the OAuth2 compose files
def test_the_oauth2_compose_files_are_valid_and_ordered(served, tmp_path):
    from .test_compose import BIN, v1_config

    _, files = served
    folder = write_tree(files, tmp_path)
    schema = subprocess.run([str(BIN / "check-jsonschema"), "--builtin-schema",
                             "vendor.compose-spec", "compose.yml"], cwd=folder,
                            capture_output=True, text=True)
    assert schema.returncode == 0, schema.stdout + schema.stderr
    env = {name: "value-from-the-environment" for name in (
        "POSTGRES_PASSWORD", "PGRST_AUTHENTICATOR_PASSWORD", "CRUD_RELAY_PASSWORD",
        "REDIS_PASSWORD", "GRAFANA_ADMIN_PASSWORD")}
    done = v1_config(folder, env)
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(files["compose.yml"])["services"]
    # The volume's folder is handed to the one-shot's user by a root job that ends first.
    assert services["jwks"]["depends_on"]["tools"] == {
        "condition": "service_completed_successfully"}
    assert f"chown {services['jwks']['user']} /run/jwks" in services["tools"]["command"][-1]
    assert "jwks:/run/jwks" in services["tools"]["volumes"]
    assert services["crud"]["depends_on"]["jwks"] == {
        "condition": "service_completed_successfully"}


# ------------------------------------------- AUTH_TYPE_JWT: the default claim, no audience
def test_jwt_mode_with_the_default_role_claim(pg, tmp_path):
    """HS256 with the secret as PostgREST takes a plain secret (one oct key of its bytes,
    Config.hs@v12.2.3:459-467); no audience configured, so no `aud` is needed; with the
    default `role` claim a signed-in caller without it is authenticated."""
    from .conftest import Database

    files = from_textproto(ROOT / "testdata" / "examples" / "product" / "product.textproto")
    conf = parse_postgrest_conf(files["postgrest/postgrest.conf"])
    assert "jwt-aud" not in conf and conf["jwt-role-claim-key"] == '."role"'
    database = Database(pg, "auth_product")
    assert database.migrate(files, tmp_path).returncode == 0
    key_set = {"keys": [{"kty": "oct", "k": b64(SECRET.encode())}]}
    cases = {
        "no role claim": ({"sub": "carol"}, "authenticated"),
        "role claim": ({"sub": "carol", "role": "authenticated"}, "authenticated"),
        "no role claim, no sub": ({"name": "x"}, "anon"),
        "empty sub": ({"sub": ""}, "anon"),
    }
    for case, (payload, role) in cases.items():
        token = jwt.encode(payload, SECRET, algorithm="HS256")
        claims = postgrest_claims(token, key_set, conf)
        assert postgrest_request(database, conf, claims, token, "SELECT current_user") == \
            [(role,)], case
    assert postgrest_request(database, conf, None, None, "SELECT current_user") == [("anon",)]
    forged = jwt.encode({"sub": "carol"}, "another-secret-of-at-least-32-bytes!", "HS256")
    assert postgrest_claims(forged, key_set, conf) == 401
