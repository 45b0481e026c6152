"""`crud-gen`: the config front door. `crud-gen configs/product.textproto -o generated`.

Also replays a request saved by the plugin (`--request dump.bin`), which is the quickest way
to debug what `buf generate` sent.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import sys
from pathlib import Path

from google.protobuf.compiler import plugin_pb2

from . import __version__, builder, descriptors, model, textproto
from .diagnostics import GenerationError
from .generate import generate
from .params import ParameterError
from .params import parse as parse_parameters
from .targets import TARGETS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="crud-gen", description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", help="a crud.v1.Backend textproto file")
    parser.add_argument("-o", "--out", default="generated", help="output folder (generated)")
    parser.add_argument("--target", action="append", choices=sorted(TARGETS),
                        help="generate only this target (repeatable)")
    parser.add_argument("--request", help="replay a CodeGeneratorRequest saved by the plugin")
    parser.add_argument("--token", metavar="ROLE",
                        help="print an HS256 API token for ROLE signed with $PGRST_JWT_SECRET "
                             "(e.g. crud_pipeline for CRUD_PIPELINE_TOKEN) and exit; the "
                             "backend's role_claim and audience come from the config (a "
                             "textproto or a .proto file) or --request, which one of them "
                             "must give")
    parser.add_argument("--version", action="version", version=f"crud-gen {__version__}")
    args = parser.parse_args(argv)
    if args.token:
        secret = os.environ.get("PGRST_JWT_SECRET", "")
        if len(secret) < 32:
            print("crud-gen: set PGRST_JWT_SECRET (32+ characters) to sign the token",
                  file=sys.stderr)
            return 2
        if bool(args.config) == bool(args.request):
            # Without the backend's settings a token could name the wrong claim or lack the
            # audience, and PostgREST would refuse it or run it as anon: never guess.
            parser.error("--token needs the backend: give its config (textproto or .proto) "
                         "or --request")
        try:
            auth = token_settings(Path(args.config) if args.config else None,
                                  Path(args.request) if args.request else None)
        except GenerationError as exc:
            print(exc, file=sys.stderr)
            return 1
        except (OSError, UnicodeDecodeError, RuntimeError) as exc:
            print(f"crud-gen: cannot read {args.config or args.request}: {exc}",
                  file=sys.stderr)
            return 2
        print(service_token(args.token, secret, auth.role_claim_path, auth.audience))
        return 0
    if bool(args.config) == bool(args.request):
        parser.error("give a config file or --request, not both")
    try:
        if args.request:
            request = plugin_pb2.CodeGeneratorRequest.FromString(Path(args.request).read_bytes())
            targets = args.target or parse_parameters(request.parameter).targets
            message, sources = descriptors.load(request)
        else:
            path = Path(args.config)
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                print(f"crud-gen: cannot read {path}: {exc.strerror}", file=sys.stderr)
                return 2
            except UnicodeDecodeError as exc:
                print(f"crud-gen: {path} is not UTF-8 text (byte {exc.start})", file=sys.stderr)
                return 2
            message, sources = textproto.load(text, str(args.config))
            targets = args.target
        files = generate(builder.build(message, sources), targets)
    except (GenerationError, ParameterError) as exc:
        print(exc, file=sys.stderr)
        print(f"crud-gen: nothing written to {args.out}", file=sys.stderr)
        return 1
    out = Path(args.out)
    removed = write_output(out, files)
    note = f", removed {removed} stale" if removed else ""
    print(f"crud-gen: wrote {len(files)} files to {out}{note}")
    return 0


MANIFEST = ".crud-gen-manifest"


def token_settings(config: Path | None, request: Path | None = None) -> model.Auth:
    """The backend's auth settings (role claim, audience) for --token: from a textproto
    config, a .proto file (read through protoc and the plugin, as buf would) or a saved
    CodeGeneratorRequest."""
    if request is not None:
        saved = plugin_pb2.CodeGeneratorRequest.FromString(request.read_bytes())
        message, sources = descriptors.load(saved)
    elif config.suffix == ".proto":
        message, sources = descriptors.load(_request_of(config))
    else:
        message, sources = textproto.load(config.read_text(encoding="utf-8"), str(config))
    return builder.build(message, sources).auth


def _request_of(proto: Path) -> plugin_pb2.CodeGeneratorRequest:
    """The CodeGeneratorRequest protoc makes for one .proto (its folder on the import path)."""
    import subprocess
    import tempfile

    from .devloop import protoc_command
    from .plugin import DUMP_VARIABLE

    with tempfile.TemporaryDirectory(prefix="crud-token-") as folder:
        dump = Path(folder) / "request.bin"
        done = subprocess.run(
            protoc_command(proto.resolve().parent, Path(folder) / "out", proto.name),
            cwd=proto.resolve().parent, capture_output=True, text=True,
            env={**os.environ, DUMP_VARIABLE: str(dump)})
        if not dump.exists():
            raise RuntimeError(done.stderr.strip() or "protoc failed")
        return plugin_pb2.CodeGeneratorRequest.FromString(dump.read_bytes())


def service_token(role: str, secret: str,
                  role_claim: tuple[tuple[str, str], ...] = (("key", "role"),),
                  audience: str = "") -> str:
    """A JWT (HS256) naming the role in the claim PostgREST reads it from (`role_claim`),
    plus `aud` when the API requires an audience: what PostgREST needs to switch to the role.
    Under OAuth2 it verifies against the served key set's oct key (postgrest/jwks.py). It
    does not expire (Arroyo's connectors cannot refresh a token); rotate it by changing the
    secret."""
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")
    payload: dict = {}
    value: object = role
    for kind, step in reversed(role_claim):  # nested as the claim path reads it
        value = {step: value} if kind == "key" else [None] * int(step) + [value]
    payload.update(value)  # a claim path starts with a key: the outermost value is a dict
    if audience:
        payload["aud"] = audience
    header = part(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    claims = part(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    signature = hmac.new(secret.encode(), f"{header}.{claims}".encode(), hashlib.sha256)
    return f"{header}.{claims}.{part(signature.digest())}"


def write_output(out: Path, files: dict[str, str]) -> int:
    """Write the files and delete those a previous run wrote that are no longer generated.

    Only files listed in the previous run's manifest are ever deleted, so anything else in
    the folder is left alone. Files whose text did not change are not rewritten, so file
    watchers (docker compose watch, make dev) see only real changes. Returns how many stale
    files were removed.
    """
    manifest = out / MANIFEST
    previous = manifest.read_text().split("\n") if manifest.exists() else []
    removed = 0
    for rel in previous:
        stale = out / rel
        if rel and rel not in files and stale.is_file():
            stale.unlink()
            removed += 1
    for rel, text in files.items():
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")  # unchanged files keep their mtime
        if text.startswith("#!"):
            target.chmod(0o755)  # scripts (protoc and buf cannot set modes: run them with sh)
    manifest.write_text("\n".join(files) + "\n")
    return removed


if __name__ == "__main__":
    raise SystemExit(main())
