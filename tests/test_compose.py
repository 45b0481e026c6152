"""The compose files: valid for the Compose Spec and for docker-compose v1, secrets only from
the environment (compose refuses to start without them), one published port."""

from __future__ import annotations

import os
import subprocess

import pytest
import yaml

from protoc_gen_crud.targets.compose import SECRETS as SECRET_NAMES
from protoc_gen_crud.targets.compose import secrets

from .support import BIN, EXAMPLES, EXAMPLES_DIR, from_text, from_textproto, model_of, write_tree

# docker-compose v1 predates two Compose Spec keys the files use: the top-level `name` and
# the services' `develop` (watch rules for hot reload). They are the only keys removed before
# v1 reads the files.
V1_UNKNOWN_TOP_LEVEL = ("name",)
V1_UNKNOWN_SERVICE_KEYS = ("develop",)


def generated(name: str, tmp_path):
    return write_tree(from_textproto(EXAMPLES_DIR / name / f"{name}.textproto"), tmp_path)


def v1_copy(folder, filename: str) -> str:
    data = yaml.safe_load((folder / filename).read_text())
    for key in V1_UNKNOWN_TOP_LEVEL:
        data.pop(key, None)
    for service in data.get("services", {}).values():
        for key in V1_UNKNOWN_SERVICE_KEYS:
            service.pop(key, None)
    target = f"v1.{filename}"
    (folder / target).write_text(yaml.safe_dump(data))
    return target


def v1_config(folder, env: dict[str, str], *files: str) -> subprocess.CompletedProcess[str]:
    args = ["docker-compose", "-f", v1_copy(folder, "compose.yml")]
    for extra in files:
        args += ["-f", v1_copy(folder, extra)]
    clean = {k: v for k, v in os.environ.items()
             if k not in SECRET_NAMES and not k.startswith(("PGRST_", "POSTGRES_"))}
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
    profiled = subprocess.run(
        ["docker-compose", "-f", "v1.compose.yml", "--profile", "observability", "config",
         "--services"], cwd=folder, capture_output=True, text=True, env={**os.environ, **env})
    assert {"prometheus", "grafana", "loki", "promtail"} <= set(profiled.stdout.split())
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
    published = {n for n, s in services.items() if "ports" in s}
    assert {n for n in published if "profiles" not in services[n]} == {"proxy"}
    assert {n for n in published if "profiles" in services[n]} == {"prometheus", "grafana"}


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_service_is_pinned_checked_and_ordered(name, tmp_path):
    files = yaml.safe_load((generated(name, tmp_path) / "compose.yml").read_text())
    services = files["services"]
    seed_names = {"database", "crud", "proxy", "mesh", "redis", "relay"}
    assert seed_names <= set(services)
    if model_of(name).rules:
        assert {"arroyo", "arroyo-register"} <= set(services)
    one_shots = {"tools", "jwks", "docs"}
    for service_name, service in services.items():
        image = service["image"]
        if "build" not in service:
            assert ":" in image and not image.endswith(":latest"), (service_name, image)
        assert "restart" in service, service_name
        if service_name not in one_shots:
            assert "healthcheck" in service, service_name
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in services
            assert rule["condition"] in ("service_healthy", "service_completed_successfully")
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith(("./", "/var/run/docker.sock")) or \
                source in files["volumes"], (service_name, volume)
    # The relay holds its slot before PostgREST takes writes; Redis keeps an append-only file.
    assert services["crud"]["depends_on"]["relay"] == {"condition": "service_healthy"}
    assert "--appendonly" in services["redis"]["command"]
    assert services["database"]["command"][1:3] == ["-c", "wal_level=logical"]


@pytest.mark.parametrize("name", EXAMPLES)
def test_hot_reload_watches_every_generated_folder(name, tmp_path):
    dev = yaml.safe_load((generated(name, tmp_path) / "compose.override.yml").read_text())
    watched = {rule["path"]: (service, rule["action"])
               for service, body in dev["services"].items()
               for rule in body.get("develop", {}).get("watch", [])}
    assert watched["./openresty"] == ("proxy", "sync+exec")
    assert watched["./migrations"] == ("migrate", "restart")
    assert watched["./dapr/components"] == ("mesh", "restart")
    assert watched["./relay/relay.json"] == ("relay", "restart")
    assert watched["./docs"] == ("docs", "restart")
    if model_of(name).rules:
        assert watched["./arroyo-queries"] == ("arroyo-register", "restart")
    reload = dev["services"]["proxy"]["develop"]["watch"][0]["exec"]["command"]
    assert reload[-2:] == ["-s", "reload"]


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


def test_database_image_is_a_major_the_suite_runs(pg):
    """What users run is what is tested: the compose stack's PostgreSQL (and the migrate
    job's psql) is the newest major of the suite's matrix, and this very server, one run of
    the matrix, is of the major its parameter says."""
    import psycopg

    from .conftest import POSTGRES_MAJORS

    with psycopg.connect(pg.dsn()) as conn:
        version = conn.execute("SHOW server_version_num").fetchone()[0]
    assert str(int(version) // 10000) == pg.major
    services = yaml.safe_load(from_textproto(
        EXAMPLES_DIR / "product" / "product.textproto")["compose.yml"])["services"]
    for name in ("database", "migrate"):
        image = services[name]["image"]
        assert image.startswith("postgres:"), image
        major = image.split(":")[1].split(".")[0]
        assert major == max(POSTGRES_MAJORS, key=int), image
