"""Compose target: `compose.yml` (runs as-is in production), `compose.override.yml`
(development conveniences, merged automatically by `docker compose up`) and `.env.example`.

Secrets appear only as `${VAR:?message}`: compose refuses to start while one is unset, and no
secret value is ever written into a generated file. Only the gateway publishes a port.
The YAML is built as data and dumped with PyYAML.
"""

from __future__ import annotations

from ..model import Backend, Service
from ..rendering import HEADER, dump_yaml
from ..resources import static_text
from . import graphql, observability, openresty, postgrest
from .arroyo import TOKEN_VARIABLE
from .observability import DAPR_METRICS_PORT
from .relay import METRICS_PORT as RELAY_METRICS_PORT
from .relay import RELAY_ROLE

ARROYO_PORT = 5115

IMAGES = {
    "database": "postgres:18.6-bookworm",
    "migrate": "postgres:18.6-bookworm",
    "crud": "postgrest/postgrest:v12.2.3",
    "proxy": "openresty/openresty:1.25.3.2-0-bookworm-fat",
    "jwks": "python:3.12.8-alpine3.21",
    "redis": "redis:7.4.1-bookworm",
    "mesh": "daprio/daprd:1.14.4",
    "arroyo": "ghcr.io/arroyosystems/arroyo:0.12.1",
    "arroyo-register": "python:3.12.8-alpine3.21",
    "tools": "busybox:1.37.0-musl",
    "docs": "node:22.12.0-alpine3.21",
    "graphql": "node:22.12.0-alpine3.21",
    "prometheus": "prom/prometheus:v2.55.1",
    "grafana": "grafana/grafana:11.3.1",
    "loki": "grafana/loki:3.3.2",
    "promtail": "grafana/promtail:3.3.2",
    "postgres-exporter": "quay.io/prometheuscommunity/postgres-exporter:v0.16.0",
    "redis-exporter": "oliver006/redis_exporter:v1.66.0",
}
SECRETS = {
    "POSTGRES_PASSWORD": "password of the database owner (runs migrations)",
    "PGRST_AUTHENTICATOR_PASSWORD": "password of PostgREST's login role, authenticator",
    "PGRST_JWT_SECRET": "HS256 secret (32+ characters) that signs API tokens (with "
                        "AUTH_TYPE_OAUTH2: service tokens, served to PostgREST as an oct key "
                        "next to the identity provider's keys)",
    "CRUD_RELAY_PASSWORD": "password of the change-capture relay's replication role",
    "REDIS_PASSWORD": "password of Redis (change streams and Dapr pub/sub)",
    "CRUD_PIPELINE_TOKEN": "API token of the crud_pipeline role, for Arroyo "
                           "(with PGRST_JWT_SECRET set: crud-gen CONFIG --token crud_pipeline, "
                           "CONFIG being the backend's .proto or textproto)",
    "GRAFANA_ADMIN_PASSWORD": "password of Grafana's admin user (observability profile)",
}
OBSERVABILITY = "observability"
# Images without a shell or an HTTP client get one static busybox, copied once into a
# volume, for their healthchecks.
TOOLS = "/tools/busybox"
# The reference page's npm project (./docs) is installed into this folder of the `docs`
# volume, which the gateway mounts read-only as its docs/ folder.
DOCS_VOLUME_DIR = "/srv/docs"
# The GraphQL API's npm install (./graphql's lock file) lives in this folder of the
# `graphql-modules` volume; the generated .mjs files are mounted beside it read-only.
GRAPHQL_DIR = "/srv/graphql"


def required(name: str) -> str:
    return "${" + name + ":?" + f"{name} is not set; see .env.example" + "}"


def secrets(backend: Backend) -> list[str]:
    names = ["POSTGRES_PASSWORD", "PGRST_AUTHENTICATOR_PASSWORD"]
    # Under OAuth2 the secret signs the pipeline's service token (see jwks_service).
    if backend.auth.type == "JWT" or (backend.auth.type == "OAUTH2" and backend.rules):
        names.append("PGRST_JWT_SECRET")
    names += ["CRUD_RELAY_PASSWORD", "REDIS_PASSWORD"]
    if backend.rules and backend.auth.type != "NONE":
        names.append("CRUD_PIPELINE_TOKEN")
    names.append("GRAFANA_ADMIN_PASSWORD")
    return names


def _override(backend: Backend, name: str) -> Service | None:
    return next((s for s in backend.infrastructure.services if s.name == name), None)


def _image(backend: Backend, name: str) -> str:
    service = _override(backend, name)
    return service.image if service and service.image else IMAGES[name]


def _healthcheck(backend: Backend, name: str, test: list[str]) -> dict:
    service = _override(backend, name)
    return {
        "test": test,
        "interval": f"{(service and service.interval_seconds) or 5}s",
        "timeout": f"{(service and service.timeout_seconds) or 3}s",
        "retries": (service and service.retries) or 10,
        "start_period": "10s",
    }


def _http_check(url: str, wget: tuple[str, ...] = (TOOLS, "wget")) -> list[str]:
    """GET url must succeed; `wget` is the image's own when it has one."""
    return ["CMD", *wget, "-q", "-O", "/dev/null", url]


def _stays_up(backend: Backend, name: str, command: str, marker: str) -> dict:
    """A one-shot job kept running after it succeeds: healthy (`marker` exists) once it
    has, so others can wait for it, and restartable by `docker compose watch` to run it
    again."""
    return {
        "command": ["sh", "-c", f"rm -f {marker} && {command} && touch {marker} && "
                    "exec sleep infinity"],
        "healthcheck": _healthcheck(backend, name, ["CMD", "test", "-f", marker]),
        "restart": "on-failure",
    }


def _healthy(*names: str) -> dict:
    return {name: {"condition": "service_healthy"} for name in names}


def published_port(backend: Backend) -> int:
    """The host port the gateway is published on (80 unless the config says otherwise)."""
    gateway = _override(backend, "proxy")
    return gateway.published_port if gateway and gateway.published_port else 80


def services(backend: Backend) -> dict[str, dict]:
    db = backend.database
    owner = db.username
    published = published_port(backend)
    tools = {"tools": {"condition": "service_completed_successfully"}}
    database = {
        "image": _image(backend, "database"),
        "command": ["postgres", "-c", "wal_level=logical", "-c", "max_replication_slots=10",
                    "-c", "max_wal_senders=10", "-c", "max_slot_wal_keep_size=4GB"],
        "environment": {
            "POSTGRES_DB": db.name,
            "POSTGRES_USER": owner,
            "POSTGRES_PASSWORD": required("POSTGRES_PASSWORD"),
        },
        "volumes": ["database-data:/var/lib/postgresql/data"],
        "healthcheck": _healthcheck(backend, "database",
                                    ["CMD", "pg_isready", "-U", owner, "-d", db.name]),
        "restart": "unless-stopped",
    }
    # Applies new migrations through the ledger, then stays up (healthy) so that `docker
    # compose watch` can restart it when a migration is added.
    migrate = {
        "image": _image(backend, "migrate"),
        **_stays_up(backend, "migrate", "psql -v ON_ERROR_STOP=1 -f /migrations/migrate.psql",
                    "/tmp/migrated"),
        "working_dir": "/migrations",
        "environment": {
            "PGHOST": "database",
            "PGPORT": str(db.port),
            "PGUSER": owner,
            "PGDATABASE": db.name,
            "PGPASSWORD": required("POSTGRES_PASSWORD"),
            "PGRST_AUTHENTICATOR_PASSWORD": required("PGRST_AUTHENTICATOR_PASSWORD"),
            "CRUD_RELAY_PASSWORD": required("CRUD_RELAY_PASSWORD"),
        },
        "volumes": ["./migrations:/migrations:ro"],
        "depends_on": _healthy("database"),
    }
    redis_password = required("REDIS_PASSWORD")
    redis = {
        "image": _image(backend, "redis"),
        "command": ["redis-server", "--appendonly", "yes", "--appendfsync", "everysec",
                    "--requirepass", redis_password],
        "environment": {"REDISCLI_AUTH": redis_password},
        "volumes": ["redis-data:/data"],
        "healthcheck": _healthcheck(backend, "redis", ["CMD", "redis-cli", "ping"]),
        "restart": "unless-stopped",
    }
    relay = {
        "build": {"context": "./relay"},
        "image": "crud-relay:" + backend.database.name.replace("_", "-"),
        "command": ["--config", "/etc/crud/relay.json"],
        "environment": {
            "CRUD_RELAY_DATABASE_URL": (f"postgres://{RELAY_ROLE}:"
                                        + required("CRUD_RELAY_PASSWORD")
                                        + f"@database:{db.port}/{db.name}"),
            "CRUD_RELAY_REDIS_URL": f"redis://:{redis_password}@redis:6379/0",
        },
        "volumes": ["./relay/relay.json:/etc/crud/relay.json:ro"],
        "depends_on": {**_healthy("database", "redis", "migrate")},
        "healthcheck": _healthcheck(backend, "relay", [
            "CMD", "python", "-c", "import urllib.request; urllib.request.urlopen("
            f"'http://127.0.0.1:{RELAY_METRICS_PORT}/metrics', timeout=2)"]),
        "restart": "unless-stopped",
    }
    crud_env = {
        "PGRST_DB_URI": (f"postgres://{backend.auth.authenticator_role}:"
                         + required("PGRST_AUTHENTICATOR_PASSWORD")
                         + f"@database:{db.port}/{db.name}"),
    }
    if backend.auth.type == "JWT":
        crud_env["PGRST_JWT_SECRET"] = required("PGRST_JWT_SECRET")
    crud = {
        "image": _image(backend, "crud"),
        "command": ["postgrest", "/etc/postgrest/postgrest.conf"],
        "environment": crud_env,
        "volumes": ["./postgrest/postgrest.conf:/etc/postgrest/postgrest.conf:ro"],
        # The relay must hold its replication slot before the first write, or that write's
        # change would not be captured.
        "depends_on": {**_healthy("database", "migrate", "relay"), **tools},
        "healthcheck": _healthcheck(backend, "crud", _http_check(
            f"http://127.0.0.1:{postgrest.ADMIN_PORT}/ready")),
        "restart": "unless-stopped",
    }
    proxy = {
        "image": _image(backend, "proxy"),
        "command": ["openresty", "-p", "/srv/gateway/", "-c", "nginx.conf",
                    "-g", "daemon off;"],
        "ports": [f"{published}:80"],
        "environment": {"CRUD_REDIS_HOST": "redis", "CRUD_REDIS_PORT": "6379",
                        "REDIS_PASSWORD": redis_password},
        "volumes": ["./openresty/nginx.conf:/srv/gateway/nginx.conf:ro",
                    "./openresty/lua:/srv/gateway/lua:ro",
                    f"docs:/srv/gateway/{openresty.DOCS_DIR}:ro", "tools:/tools:ro"],
        "tmpfs": ["/srv/gateway/logs"],
        # nginx resolves the GraphQL upstream's name when it starts: the service must be up.
        "depends_on": {**_healthy("crud", "redis", "graphql"), **tools,
                       "docs": {"condition": "service_completed_successfully"}},
        # /live: the gateway itself. /health also reports Redis, the relay and the APIs; a
        # part being down must not mark the gateway unhealthy (and get it restarted).
        "healthcheck": _healthcheck(backend, "proxy", _http_check("http://127.0.0.1/live")),
        "restart": "unless-stopped",
    }
    docs = docs_service(backend)
    graphql_service = graphql_service_of(backend)
    tools_service = {
        "image": IMAGES["tools"],
        "command": ["cp", "/bin/busybox", TOOLS],
        "volumes": ["tools:/tools"],
        "restart": "no",
    }
    mesh = {
        "image": _image(backend, "mesh"),
        "command": ["./daprd", "--app-id", "crud", "--resources-path", "/components",
                    "--dapr-http-port", "3500", "--dapr-grpc-port", "50001",
                    "--metrics-port", str(DAPR_METRICS_PORT), "--enable-metrics",
                    "--log-as-json"],
        "environment": {"REDIS_PASSWORD": redis_password, "REDIS_ENABLE_TLS": "false"},
        "volumes": ["./dapr/components:/components:ro", "tools:/tools:ro"],
        "depends_on": {**_healthy("redis"), **tools},
        "healthcheck": _healthcheck(backend, "mesh", _http_check(
            "http://127.0.0.1:3500/v1.0/healthz/outbound")),
        "restart": "unless-stopped",
    }
    result = {"database": database, "migrate": migrate, "tools": tools_service, "docs": docs}
    if backend.auth.type == "OAUTH2":
        result["jwks"] = jwks_service(backend, tools_service)
        crud["volumes"].append(f"jwks:{postgrest.JWKS_DIR}:ro")
        crud["depends_on"]["jwks"] = {"condition": "service_completed_successfully"}
        graphql_service["volumes"].append(f"jwks:{postgrest.JWKS_DIR}:ro")
        graphql_service["depends_on"]["jwks"] = {"condition": "service_completed_successfully"}
    crud["volumes"].append("tools:/tools:ro")
    result.update({"redis": redis, "relay": relay, "crud": crud, "graphql": graphql_service,
                   "proxy": proxy, "mesh": mesh})
    if backend.rules:
        result.update(arroyo_services(backend, tools))
    result.update(observability_services(backend, tools))
    return result


def docs_service(backend: Backend) -> dict:
    """The one-shot that installs the reference page's files (Swagger UI, from npm at the
    version docs/package-lock.json pins; no install scripts run) into the `docs` volume. It
    installs again only when the lock file changed. Without the registry it says so and
    still succeeds: the API does not wait on the page, which then reports its files
    missing."""
    install = ("cp /src/package.json /src/package-lock.json . && npm ci --ignore-scripts "
               "--no-audit --no-fund && cp package-lock.json installed.lock")
    script = (f"cd {DOCS_VOLUME_DIR} && if cmp -s /src/package-lock.json installed.lock; then "
              "echo 'docs: up to date'; else rm -f installed.lock && { " + install + " || echo "
              "'docs: npm ci failed: the reference page has no Swagger UI files'; }; fi")
    return {
        "image": _image(backend, "docs"),
        "command": ["sh", "-c", script],
        "volumes": [f"./{openresty.DOCS_DIR}:/src:ro", f"docs:{DOCS_VOLUME_DIR}"],
        "restart": "no",
    }


def graphql_service_of(backend: Backend) -> dict:
    """The GraphQL API (graphql/server.mjs on Node 22): installs ./graphql's lock file into the
    `graphql-modules` volume when it changed (no install scripts), then serves on its port,
    which only the gateway reaches. It logs in as PostgREST's authenticator."""
    db = backend.database
    install = ("cp /src/package.json /src/package-lock.json . && npm ci --ignore-scripts "
               "--omit=dev --no-audit --no-fund && cp package-lock.json installed.lock")
    script = (f"cd {GRAPHQL_DIR} && {{ cmp -s /src/package-lock.json installed.lock || "
              f"{{ rm -f installed.lock && {install}; }}; }} && cp /src/*.mjs . && "
              "exec node server.mjs")
    environment = {
        "CRUD_GRAPHQL_DATABASE_URL": (f"postgres://{backend.auth.authenticator_role}:"
                                      + required("PGRST_AUTHENTICATOR_PASSWORD")
                                      + f"@database:{db.port}/{db.name}"),
        "CRUD_GRAPHQL_PORT": str(graphql.PORT),
        "NODE_ENV": "production",
    }
    if backend.auth.type == "JWT":
        environment["PGRST_JWT_SECRET"] = required("PGRST_JWT_SECRET")
    return {
        "image": _image(backend, "graphql"),
        "command": ["sh", "-c", script],
        "environment": environment,
        "volumes": [f"./{graphql.DIR}:/src:ro", f"graphql-modules:{GRAPHQL_DIR}"],
        "depends_on": _healthy("database", "migrate"),
        "healthcheck": {**_healthcheck(backend, "graphql", _http_check(
            f"http://127.0.0.1:{graphql.PORT}/health", wget=("wget",))),
                        "start_period": "60s"},
        "restart": "unless-stopped",
    }


# The unprivileged user the `jwks` one-shot runs as (alpine's nobody).
JWKS_USER = "65534:65534"
JWKS_SCRIPT_IN_CONTAINER = "/etc/crud/jwks.py"


def jwks_service(backend: Backend, tools_service: dict) -> dict:
    """The OAuth2 one-shot: fetches the provider's JWKS, checks every key as PostgREST's JOSE
    library parses it (postgrest/jwks.py), adds the service key, writes the set where
    postgrest.conf's jwt-secret points. It runs as an unprivileged user; a fresh named volume
    is owned by root, so the `tools` one-shot (root, finished before it) hands the volume's
    folder to that user first."""
    tools_service["command"] = ["sh", "-c", f"cp /bin/busybox {TOOLS} && chown {JWKS_USER} "
                                f"{postgrest.JWKS_DIR}"]
    tools_service["volumes"] = [*tools_service["volumes"], f"jwks:{postgrest.JWKS_DIR}"]
    # Mandatory when the pipeline needs its service token; otherwise optional.
    if "PGRST_JWT_SECRET" in secrets(backend):
        secret = required("PGRST_JWT_SECRET")
    else:
        secret = "${PGRST_JWT_SECRET:-}"
    return {
        "image": _image(backend, "jwks"),
        "user": JWKS_USER,
        "command": ["python", JWKS_SCRIPT_IN_CONTAINER, "--out", postgrest.JWKS_PATH,
                    backend.auth.jwks_url],
        # Added to the served set as an oct key; never in PostgREST's own environment,
        # where it would replace the key set.
        "environment": {"PGRST_JWT_SECRET": secret},
        "volumes": [f"./{postgrest.JWKS_SCRIPT}:{JWKS_SCRIPT_IN_CONTAINER}:ro",
                    f"jwks:{postgrest.JWKS_DIR}"],
        "depends_on": {"tools": {"condition": "service_completed_successfully"}},
        "restart": "no",
    }


def arroyo_services(backend: Backend, tools: dict) -> dict[str, dict]:
    # Checkpoints and the pipeline database (SQLite, by default under the container's own
    # config directory, lost when the container is recreated) both live on the volume.
    env = {"ARROYO__CHECKPOINT_URL": "file:///var/lib/arroyo/checkpoints",
           "ARROYO__DATABASE__TYPE": "sqlite",
           "ARROYO__DATABASE__SQLITE__PATH": "/var/lib/arroyo/config.sqlite"}
    if backend.auth.type != "NONE":
        env[TOKEN_VARIABLE] = required(TOKEN_VARIABLE)
    arroyo_service = {
        "image": _image(backend, "arroyo"),
        "command": ["cluster"],
        "environment": env,
        "volumes": ["arroyo-data:/var/lib/arroyo", "./arroyo-queries:/queries:ro",
                    "tools:/tools:ro"],
        "depends_on": {**_healthy("proxy"), **tools},
        "healthcheck": _healthcheck(backend, "arroyo", _http_check(
            f"http://127.0.0.1:{ARROYO_PORT}/api/v1/pipelines")),
        "restart": "unless-stopped",
    }
    # Registers the pipelines; restarted by `docker compose watch` when a query changes.
    register = {
        "image": _image(backend, "arroyo-register"),
        **_stays_up(backend, "arroyo-register", "python /queries/register.py",
                    "/tmp/registered"),
        "environment": {"ARROYO_API": f"http://arroyo:{ARROYO_PORT}/api/v1"},
        "volumes": ["./arroyo-queries:/queries:ro"],
        "depends_on": _healthy("arroyo"),
    }
    return {"arroyo": arroyo_service, "arroyo-register": register}


def observability_services(backend: Backend, tools: dict) -> dict[str, dict]:
    """The `observability` profile: metrics, dashboards, logs. Its UIs are the only ports
    published besides the gateway."""
    db = backend.database
    folder = "./" + observability.FOLDER
    prometheus = {
        "image": _image(backend, "prometheus"),
        "command": ["--config.file=/etc/prometheus/prometheus.yml",
                    "--storage.tsdb.path=/prometheus", "--storage.tsdb.retention.time=15d",
                    "--web.enable-lifecycle"],
        "ports": ["9090:9090"],
        "volumes": [f"{folder}/prometheus:/etc/prometheus:ro", "prometheus-data:/prometheus"],
        "healthcheck": _healthcheck(backend, "prometheus", _http_check(
            "http://127.0.0.1:9090/-/ready", wget=("wget",))),
    }
    grafana = {
        "image": _image(backend, "grafana"),
        "environment": {"GF_SECURITY_ADMIN_PASSWORD": required("GRAFANA_ADMIN_PASSWORD"),
                        "GF_USERS_ALLOW_SIGN_UP": "false"},
        "ports": ["3000:3000"],
        "volumes": [f"{folder}/grafana/provisioning:/etc/grafana/provisioning:ro",
                    f"{folder}/grafana/dashboards:/var/lib/grafana/dashboards:ro",
                    "grafana-data:/var/lib/grafana"],
        "depends_on": _healthy("prometheus", "loki"),
        "healthcheck": _healthcheck(backend, "grafana", _http_check(
            "http://127.0.0.1:3000/api/health", wget=("wget",))),
    }
    loki = {
        "image": _image(backend, "loki"),
        "command": ["-config.file=/etc/loki/loki.yml"],
        "volumes": [f"{folder}/loki/loki.yml:/etc/loki/loki.yml:ro", "loki-data:/loki",
                    "tools:/tools:ro"],
        "depends_on": tools,
        "healthcheck": _healthcheck(backend, "loki", _http_check("http://127.0.0.1:3100/ready")),
    }
    # Reads every container's log through the Docker API; the compose service name becomes
    # the `service` label.
    promtail = {
        "image": _image(backend, "promtail"),
        "command": ["-config.file=/etc/promtail/promtail.yml"],
        "volumes": [f"{folder}/loki/promtail.yml:/etc/promtail/promtail.yml:ro",
                    "/var/run/docker.sock:/var/run/docker.sock:ro", "tools:/tools:ro"],
        "depends_on": {**_healthy("loki"), **tools},
        "healthcheck": _healthcheck(backend, "promtail",
                                    _http_check("http://127.0.0.1:9080/ready")),
    }
    postgres_exporter = {
        "image": _image(backend, "postgres-exporter"),
        "environment": {
            "DATA_SOURCE_URI": f"database:{db.port}/{db.name}?sslmode=disable",
            "DATA_SOURCE_USER": db.username,
            "DATA_SOURCE_PASS": required("POSTGRES_PASSWORD"),
        },
        "depends_on": {**_healthy("database"), **tools},
        "volumes": ["tools:/tools:ro"],
        "healthcheck": _healthcheck(backend, "postgres-exporter",
                                    _http_check("http://127.0.0.1:9187/metrics")),
    }
    redis_exporter = {
        "image": _image(backend, "redis-exporter"),
        "environment": {"REDIS_ADDR": "redis://redis:6379",
                        "REDIS_PASSWORD": required("REDIS_PASSWORD"),
                        "REDIS_EXPORTER_CHECK_STREAMS": "crud.*"},
        "depends_on": {**_healthy("redis"), **tools},
        "volumes": ["tools:/tools:ro"],
        "healthcheck": _healthcheck(backend, "redis-exporter",
                                    _http_check("http://127.0.0.1:9121/metrics")),
    }
    found = {"prometheus": prometheus, "grafana": grafana, "loki": loki, "promtail": promtail,
             "postgres-exporter": postgres_exporter, "redis-exporter": redis_exporter}
    for service in found.values():
        service.update({"profiles": [OBSERVABILITY], "restart": "unless-stopped"})
    return found


def compose(backend: Backend) -> dict:
    volumes = {"database-data": {}, "redis-data": {}, "tools": {}, "docs": {},
               "graphql-modules": {}}
    if backend.rules:
        volumes["arroyo-data"] = {}
    if backend.auth.type == "OAUTH2":
        volumes["jwks"] = {}
    volumes.update({"prometheus-data": {}, "grafana-data": {}, "loki-data": {}})
    return {"name": backend.database.name.replace("_", "-"), "services": services(backend),
            "volumes": volumes}


def override(backend: Backend) -> dict:
    """Development: chattier logs, Arroyo's console, and hot reload. `docker compose up
    --watch` merges this file and applies regenerated files as they change: the gateway
    reloads its configuration (gracefully: open SSE streams resume with Last-Event-ID), new
    migrations run, changed queries re-register, changed components restart the sidecar.
    Production runs `docker compose -f compose.yml up`."""
    dev: dict[str, dict] = {
        "crud": {"environment": {"PGRST_LOG_LEVEL": "info"}},
        "proxy": {"develop": {"watch": [{
            # The files reach the container through its bind mounts; the sync only gives
            # compose a place to copy to before it runs the reload.
            "path": "./openresty", "action": "sync+exec", "target": "/tmp/crud-watch",
            "exec": {"command": ["openresty", "-p", "/srv/gateway/", "-c", "nginx.conf",
                                 "-s", "reload"]},
        }]}},
        "migrate": {"develop": {"watch": [{"path": "./migrations", "action": "restart"}]}},
        # Ruru (GraphiQL) in development only; changed graphql/ files restart it, and a
        # migration's schema change reaches it without a restart: with CRUD_GRAPHQL_DEV it
        # builds its schemas again on the NOTIFY pgrst, 'reload schema' that migrate.psql
        # ends with.
        "graphql": {"environment": {"CRUD_GRAPHQL_DEV": "1", "NODE_ENV": "development"},
                    "develop": {"watch": [{"path": f"./{graphql.DIR}", "action": "restart"}]}},
        # A new lock file (a newer protoc-gen-crud) installs the page's files again.
        "docs": {"develop": {"watch": [{"path": f"./{openresty.DOCS_DIR}",
                                        "action": "restart"}]}},
        "relay": {"develop": {"watch": [{"path": "./relay/relay.json",
                                         "action": "restart"}]}},
        "mesh": {"develop": {"watch": [{"path": "./dapr/components", "action": "restart"}]}},
    }
    if backend.rules:
        dev["arroyo"] = {"ports": [f"{ARROYO_PORT}:{ARROYO_PORT}"]}
        dev["arroyo-register"] = {"develop": {"watch": [{"path": "./arroyo-queries",
                                                         "action": "restart"}]}}
    return {"services": dev}


def env_example(backend: Backend) -> str:
    lines = [HEADER.rstrip("\n"), "# Copy to .env and fill in; compose refuses to start "
             "while any of these is empty.", ""]
    for name in secrets(backend):
        lines += [f"# {SECRETS[name]}", f"{name}="]
    return "\n".join(lines) + "\n"


def docs_files() -> dict[str, str]:
    """The reference page's npm project, which the `docs` service installs: its lock file
    pins Swagger UI and its one dependency by version and integrity hash."""
    return {f"{openresty.DOCS_DIR}/{name}": static_text(f"docs/{name}")
            for name in ("package.json", "package-lock.json")}


def render(backend: Backend) -> dict[str, str]:
    return {
        **docs_files(),
        "compose.yml": HEADER + "# Production: docker compose -f compose.yml up\n"
        + dump_yaml(compose(backend)),
        "compose.override.yml": HEADER + "# Development settings, merged by `docker compose "
        "up`.\n" + dump_yaml(override(backend)),
        ".env.example": env_example(backend),
    }
