"""The compose files: valid for the Compose Spec and for docker-compose v1, secrets only from
the environment (compose refuses to start without them), one published port."""

from __future__ import annotations

import os
import subprocess

import pytest
import yaml

from protoc_gen_crud.targets.compose import secrets

from .support import BIN, EXAMPLES, EXAMPLES_DIR, from_text, from_textproto, model_of, write_tree

# docker-compose v1 predates the Compose Spec's top-level `name`; it is the only key removed
# before v1 reads the file.
V1_UNKNOWN_TOP_LEVEL = ("name",)


def generated(name: str, tmp_path):
    return write_tree(from_textproto(EXAMPLES_DIR / name / f"{name}.textproto"), tmp_path)


def v1_config(folder, env: dict[str, str], *files: str) -> subprocess.CompletedProcess[str]:
    data = yaml.safe_load((folder / "compose.yml").read_text())
    for key in V1_UNKNOWN_TOP_LEVEL:
        data.pop(key, None)
    (folder / "compose.v1.yml").write_text(yaml.safe_dump(data))
    args = ["docker-compose", "-f", "compose.v1.yml"]
    for extra in files:
        args += ["-f", extra]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PGRST_", "POSTGRES_"))}
    return subprocess.run([*args, "config", "-q"], cwd=folder, capture_output=True, text=True,
                          env={**clean, **env})


@pytest.mark.parametrize("name", EXAMPLES)
def test_compose_spec_schema(name, tmp_path):
    folder = generated(name, tmp_path)
    done = subprocess.run([str(BIN / "check-jsonschema"), "--builtin-schema",
                           "vendor.compose-spec", "compose.yml", "compose.override.yml"],
                          cwd=folder, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("name", EXAMPLES)
def test_docker_compose_v1_reads_it_and_refuses_missing_secrets(name, tmp_path):
    folder = generated(name, tmp_path)
    names = secrets(model_of(name))
    env = {secret: "value-from-the-environment" for secret in names}
    done = v1_config(folder, env, "compose.override.yml")
    assert done.returncode == 0, done.stderr
    for secret in names:
        missing = v1_config(folder, {k: v for k, v in env.items() if k != secret})
        assert missing.returncode != 0
        assert f"{secret} is not set" in missing.stderr
    example = (folder / ".env.example").read_text()
    assert [line.split("=")[0] for line in example.splitlines()
            if line and not line.startswith("#")] == names


@pytest.mark.parametrize("name", EXAMPLES)
def test_only_the_gateway_publishes_a_port(name, tmp_path):
    services = yaml.safe_load((generated(name, tmp_path) / "compose.yml").read_text())["services"]
    assert {n for n, s in services.items() if "ports" in s} == {"proxy"}


def test_no_secret_from_the_config_reaches_a_generated_file():
    files = from_text("""
        database { name: "shop" connection { username: "owner" password: "Xy7-dev-only-pass" } }
        entity { name: "note" fields { name: "body" type: SQL_TYPE_TEXT } }
    """)
    assert not [path for path, text in files.items() if "Xy7-dev-only-pass" in text]


def test_oauth2_fetches_the_jwks_before_postgrest_starts():
    files = from_text("""
        entity { name: "note" fields { name: "body" type: SQL_TYPE_TEXT } }
        api { auth { type: AUTH_TYPE_OAUTH2 jwks_url: "https://id.example/.well-known/jwks.json" } }
    """)
    services = yaml.safe_load(files["compose.yml"])["services"]
    assert services["jwks"]["command"][-1] == "https://id.example/.well-known/jwks.json"
    assert services["crud"]["depends_on"]["jwks"] == {
        "condition": "service_completed_successfully"}
    assert "PGRST_JWT_SECRET" not in services["crud"]["environment"]
