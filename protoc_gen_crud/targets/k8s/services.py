"""The stateless and single-instance services: PostgREST, the gateway, crud-relay, Redis.

PostgREST and the gateway scale out (any gateway replica serves any SSE client: it reads
the Redis streams with plain XREAD and Last-Event-ID is a global stream id). The relay must
stay one process per replication slot, and Redis is one instance with an append-only file.
"""

from __future__ import annotations

from ...model import Backend
from .. import graphql, openresty, postgrest
from .. import relay as relay_target
from ..compose import IMAGES
from ..observability import DAPR_METRICS_PORT
from ..relay import METRICS_PORT as RELAY_METRICS_PORT
from ..relay import RELAY_ROLE
from . import common as c

POSTGREST_UID = 1000  # the postgrest image's own user
NODE_UID = 1000  # the node image's `node` user
NOBODY = 65534
RELAY_UID = 10001  # relay/Dockerfile's user
REDIS_UID = 999  # the redis image's `redis` user
GATEWAY_PREFIX = "/srv/gateway/"
DOCKER_RESOLVER = "resolver 127.0.0.11 ipv6=off valid=30s;"
# nginx's resolver (Lua resolves Redis itself) must be the cluster DNS; nginx resolves this
# name once at start through the pod's resolv.conf. Names it then looks up are not expanded
# by search domains, so Redis is given by its full name (CRUD_REDIS_HOST).
CLUSTER_RESOLVER = "resolver kube-dns.kube-system.svc.cluster.local ipv6=off valid=30s;"
GRACE_SECONDS = 30
DRAIN_SECONDS = 5  # endpoints are removed while the pod still serves


def _dapr_annotations(app_id: str, app_port: int) -> dict[str, str]:
    """The Dapr sidecar compose runs as `mesh` (app id `crud`): on PostgREST's pods, so
    Dapr apps reach the API through service invocation and the components are loaded."""
    return {
        "dapr.io/enabled": "true",
        "dapr.io/app-id": app_id,
        "dapr.io/app-port": str(app_port),
        "dapr.io/enable-metrics": "true",
        "dapr.io/metrics-port": str(DAPR_METRICS_PORT),
        "dapr.io/log-as-json": "true",
        "dapr.io/sidecar-cpu-request": "50m",
        "dapr.io/sidecar-cpu-limit": "500m",
        "dapr.io/sidecar-memory-request": "64Mi",
        "dapr.io/sidecar-memory-limit": "256Mi",
        # The sidecar compose runs, not whatever version the control plane defaults to.
        "dapr.io/sidecar-image": IMAGES["mesh"],
    }


DAPR_APP_ID = "crud"


def _deployment(name: str, component: str, replicas: int, pod: dict,
                annotations: dict | None = None) -> dict:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": c.metadata(name, component),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": c.labels(component)},
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": c.pod_template(component, pod, annotations),
        },
    }


def postgrest_objects(backend: Backend) -> list[c.Resource]:
    files = postgrest.render(backend)
    config_name = "postgrest-" + c.digest(*files.values())
    db = backend.database
    env = [
        c.secret_env("PGRST_AUTHENTICATOR_PASSWORD", c.AUTHENTICATOR_SECRET, "password"),
        # The schema cache listens for NOTIFY pgrst, which only the primary delivers.
        {"name": "PGRST_DB_URI",
         "value": (f"postgres://{backend.auth.authenticator_role}:$(PGRST_AUTHENTICATOR_PASSWORD)"
                   f"@{c.PRIMARY}:{c.PG_PORT}/{db.name}")},
    ]
    if backend.auth.type == "JWT":
        env.append(c.secret_env("PGRST_JWT_SECRET", c.JWT_SECRET, "PGRST_JWT_SECRET"))
    volumes = [{"name": "config", "configMap": {"name": config_name,
                                                "items": [{"key": "postgrest.conf",
                                                           "path": "postgrest.conf"}]}}]
    mounts = [{"name": "config", "mountPath": "/etc/postgrest", "readOnly": True}]
    init: list[dict] = []
    if backend.auth.type == "OAUTH2":
        # The key set is fetched and checked before PostgREST starts, as compose's `jwks`.
        _fetch_key_set(backend, config_name, volumes, mounts, init)
    container = {
        "name": "postgrest", "image": IMAGES["crud"],
        "command": ["postgrest", "/etc/postgrest/postgrest.conf"],
        "env": env,
        "ports": [{"name": "http", "containerPort": postgrest.SERVER_PORT, "protocol": "TCP"},
                  {"name": "admin", "containerPort": postgrest.ADMIN_PORT, "protocol": "TCP"}],
        "readinessProbe": c.http_probe("/ready", "admin", period=5),
        "livenessProbe": c.http_probe("/live", "admin", period=10, delay=5),
        # PostgREST has no shell: the kubelet itself waits while endpoints drain.
        "lifecycle": {"preStop": {"sleep": {"seconds": DRAIN_SECONDS}}},
        "volumeMounts": mounts,
        "resources": c.resources("100m", "128Mi", "1", "512Mi"),
        "securityContext": c.secure(POSTGREST_UID),
    }
    pod: dict = {
        "securityContext": c.pod_security(POSTGREST_UID),
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": GRACE_SECONDS,
        "containers": [container], "volumes": volumes,
    }
    if init:
        pod["initContainers"] = init
    return [
        c.config_map_files(config_name, "postgrest", {k.removeprefix("postgrest/"): v
                                                for k, v in files.items()}),
        _deployment("postgrest", "postgrest", 2, pod,
                    _dapr_annotations(DAPR_APP_ID, postgrest.SERVER_PORT)),
        # `crud` is the host name nginx.conf, the Arroyo sinks and Dapr's HTTPEndpoint use.
        c.service(openresty.UPSTREAM_HOST, "postgrest", [("http", postgrest.SERVER_PORT),
                                                         ("admin", postgrest.ADMIN_PORT)]),
        c.pdb("postgrest", "postgrest"),
    ]


def graphql_objects(backend: Backend) -> list[c.Resource]:
    """The GraphQL API (graphql/ as its target writes it) on Node 22: an init container
    installs the pinned lock file (no install scripts) and copies the files into the pod's
    own volume, where `node server.mjs` runs as the node image's user. It logs in as the
    authenticator, like PostgREST; the gateway reaches it as `graphql`."""
    files = {k.removeprefix(f"{graphql.DIR}/"): v for k, v in graphql.render(backend).items()}
    if backend.auth.type == "OAUTH2":
        files["jwks.py"] = postgrest.render(backend)[postgrest.JWKS_SCRIPT]
    config_name = "graphql-" + c.digest(*files.values())
    db = backend.database
    app = "/srv/graphql"
    env = [
        c.secret_env("PGRST_AUTHENTICATOR_PASSWORD", c.AUTHENTICATOR_SECRET, "password"),
        {"name": "CRUD_GRAPHQL_DATABASE_URL",
         "value": (f"postgres://{backend.auth.authenticator_role}:$(PGRST_AUTHENTICATOR_PASSWORD)"
                   f"@{c.PRIMARY}:{c.PG_PORT}/{db.name}")},
        {"name": "CRUD_GRAPHQL_PORT", "value": str(graphql.PORT)},
        {"name": "NODE_ENV", "value": "production"},
    ]
    if backend.auth.type == "JWT":
        env.append(c.secret_env("PGRST_JWT_SECRET", c.JWT_SECRET, "PGRST_JWT_SECRET"))
    sources = sorted(k for k in files if k != "jwks.py")
    volumes = [
        {"name": "config", "configMap": {"name": config_name, "items": [
            {"key": key, "path": key} for key in sources]}},
        {"name": "app", "emptyDir": {"sizeLimit": "256Mi"}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
    ]
    install = (f"cp /src/* {app}/ && cd {app} && npm ci --ignore-scripts --omit=dev "
               "--no-audit --no-fund")
    init = [{
        "name": "install", "image": IMAGES["graphql"],
        "command": ["sh", "-c", install],
        "env": [{"name": "HOME", "value": "/tmp"}],
        "volumeMounts": [{"name": "config", "mountPath": "/src", "readOnly": True},
                         {"name": "app", "mountPath": app}, {"name": "tmp", "mountPath": "/tmp"}],
        "resources": c.resources("100m", "256Mi", "1", "512Mi"),
        "securityContext": c.secure(NODE_UID),
    }]
    mounts = [{"name": "app", "mountPath": app, "readOnly": True},
              {"name": "tmp", "mountPath": "/tmp"}]
    if backend.auth.type == "OAUTH2":
        # The key set PostgREST verifies with, fetched and checked the same way.
        _fetch_key_set(backend, config_name, volumes, mounts, init)
    container = {
        "name": "graphql", "image": IMAGES["graphql"],
        "command": ["node", "server.mjs"],
        "workingDir": app,
        "env": env,
        "ports": [{"name": "http", "containerPort": graphql.PORT, "protocol": "TCP"}],
        "readinessProbe": c.http_probe("/health", "http", period=5),
        "livenessProbe": c.http_probe("/health", "http", period=10, delay=30),
        "lifecycle": {"preStop": {"sleep": {"seconds": DRAIN_SECONDS}}},
        "volumeMounts": mounts,
        "resources": c.resources("100m", "256Mi", "1", "768Mi"),
        "securityContext": c.secure(NODE_UID),
    }
    pod = {
        "securityContext": c.pod_security(NODE_UID),
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": GRACE_SECONDS,
        "initContainers": init, "containers": [container], "volumes": volumes,
    }
    return [
        c.config_map_files(config_name, "graphql", files),
        _deployment("graphql", "graphql", 2, pod),
        c.service(graphql.HOST, "graphql", [("http", graphql.PORT)]),
        c.pdb("graphql", "graphql"),
    ]


def gateway_files(backend: Backend) -> dict[str, str]:
    """openresty/ as that target writes it (by file name: nginx.conf and the Lua modules),
    with Docker's DNS replaced by the cluster's."""
    files = {}
    for path, text in openresty.render(backend).items():
        if path.endswith("nginx.conf"):
            if text.count(DOCKER_RESOLVER) != 1:
                raise RuntimeError("nginx.conf no longer names Docker's resolver once; "
                                   "update the Kubernetes target")
            text = text.replace(DOCKER_RESOLVER, CLUSTER_RESOLVER)
        files[path.rsplit("/", 1)[1]] = text
    if len(files) != len(openresty.render(backend)):
        raise RuntimeError("two gateway files share a name")
    return files


def gateway_objects(backend: Backend) -> list[c.Resource]:
    files = gateway_files(backend)
    config_name = "gateway-" + c.digest(*files.values())
    lua = sorted(k for k in files if k != "nginx.conf")
    volumes = [
        {"name": "conf", "configMap": {"name": config_name,
                                       "items": [{"key": "nginx.conf", "path": "nginx.conf"}]}},
        {"name": "lua", "configMap": {"name": config_name, "items": [
            {"key": key, "path": key} for key in lua]}},
        {"name": "logs", "emptyDir": {"sizeLimit": "256Mi"}},
    ]
    reload = ["openresty", "-p", GATEWAY_PREFIX, "-c", "conf/nginx.conf"]
    container = {
        "name": "openresty", "image": IMAGES["proxy"],
        "command": [*reload, "-g", "daemon off;"],
        "env": [
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath":
                                                                 "metadata.namespace"}}},
            {"name": "CRUD_REDIS_HOST", "value": "redis.$(POD_NAMESPACE).svc.cluster.local"},
            {"name": "CRUD_REDIS_PORT", "value": "6379"},
            {"name": "CRUD_SSE_HEARTBEAT_MS", "value": str(c.SSE_HEARTBEAT_SECONDS * 1000)},
            c.secret_env("REDIS_PASSWORD", c.REDIS_SECRET, "REDIS_PASSWORD"),
        ],
        "ports": [{"name": "http", "containerPort": openresty.LISTEN_PORT, "protocol": "TCP"},
                  {"name": "internal", "containerPort": openresty.INTERNAL_PORT,
                   "protocol": "TCP"}],
        # /live: the gateway itself. /health also reports Redis, the relay and the APIs; a
        # part being down must neither restart the gateway nor take it out of service (the
        # API still answers while the relay is down).
        "readinessProbe": c.http_probe("/live", "http", period=5),
        "livenessProbe": c.http_probe("/live", "http", period=10, delay=5),
        # Stop taking new connections after the endpoints drained, then let open requests
        # finish (SSE clients reconnect elsewhere with Last-Event-ID).
        "lifecycle": {"preStop": {"exec": {"command": [
            "sh", "-c", f"sleep {DRAIN_SECONDS} && " + " ".join(reload) + " -s quit"]}}},
        "volumeMounts": [
            {"name": "conf", "mountPath": GATEWAY_PREFIX + "conf", "readOnly": True},
            {"name": "lua", "mountPath": GATEWAY_PREFIX + "lua", "readOnly": True},
            {"name": "logs", "mountPath": GATEWAY_PREFIX + "logs"},
        ],
        "resources": c.resources("100m", "128Mi", "1", "512Mi"),
        "securityContext": c.secure(NOBODY),
    }
    pod = {
        # Port 80 without root: binding low ports is allowed in the pod's network namespace.
        "securityContext": {**c.pod_security(NOBODY), "sysctls": [
            {"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]},
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": GRACE_SECONDS,
        "containers": [container], "volumes": volumes,
    }
    ingress = {
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": c.metadata("gateway", "gateway", annotations={
            # SSE through ingress-nginx: no buffering, idle streams kept far beyond the
            # gateway's heartbeat.
            "nginx.ingress.kubernetes.io/proxy-buffering": "off",
            "nginx.ingress.kubernetes.io/proxy-read-timeout":
                str(c.INGRESS_READ_TIMEOUT_SECONDS),
            "nginx.ingress.kubernetes.io/proxy-send-timeout":
                str(c.INGRESS_READ_TIMEOUT_SECONDS),
            "nginx.ingress.kubernetes.io/proxy-body-size": backend.rate_limit.max_body_size,
        }),
        "spec": {
            "ingressClassName": "nginx",
            "rules": [{"http": {"paths": [{
                "path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": GATEWAY_SERVICE, "port": {"name": "http"}}},
            }]}}],
        },
    }
    return [
        c.config_map_files(config_name, "gateway", files),
        _deployment("gateway", "gateway", 2, pod),
        # `proxy` is the host name the Arroyo queries use (SSE source, publish sink).
        c.service(GATEWAY_SERVICE, "gateway", [("http", openresty.LISTEN_PORT),
                                               ("internal", openresty.INTERNAL_PORT)]),
        ingress,
        c.pdb("gateway", "gateway"),
    ]


GATEWAY_SERVICE = "proxy"


def relay_objects(backend: Backend) -> list[c.Resource]:
    config_text = relay_target.render(backend)["relay/relay.json"]
    config_name = "relay-" + c.digest(config_text)
    db = backend.database
    container = {
        "name": "relay", "image": c.relay_image(backend),
        "args": ["--config", "/etc/crud/relay.json"],
        "env": [
            c.secret_env("CRUD_RELAY_PASSWORD", c.RELAY_SECRET, "password"),
            c.secret_env("REDIS_PASSWORD", c.REDIS_SECRET, "REDIS_PASSWORD"),
            {"name": "CRUD_RELAY_DATABASE_URL",
             "value": f"postgres://{RELAY_ROLE}:$(CRUD_RELAY_PASSWORD)@{c.PRIMARY}:{c.PG_PORT}/"
                      f"{db.name}"},
            {"name": "CRUD_RELAY_REDIS_URL", "value": "redis://:$(REDIS_PASSWORD)@redis:6379/0"},
        ],
        "ports": [{"name": "metrics", "containerPort": RELAY_METRICS_PORT, "protocol": "TCP"}],
        # /health turns 503 while PostgreSQL or Redis is away: not ready then, but alive
        # (it reconnects by itself) as long as it serves its metrics.
        "readinessProbe": c.http_probe("/health", "metrics", period=5),
        "livenessProbe": c.http_probe("/metrics", "metrics", period=10, delay=10),
        "volumeMounts": [{"name": "config", "mountPath": "/etc/crud", "readOnly": True}],
        "resources": c.resources("100m", "128Mi", "1", "512Mi"),
        "securityContext": c.secure(RELAY_UID),
    }
    statefulset = {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": c.metadata("relay", "relay"),
        "spec": {
            # One consumer per replication slot: never two pods, not even during an update.
            "replicas": 1,
            "serviceName": "relay",
            "podManagementPolicy": "OrderedReady",
            "updateStrategy": {"type": "RollingUpdate"},
            "selector": {"matchLabels": c.labels("relay")},
            "template": c.pod_template("relay", {
                "securityContext": c.pod_security(RELAY_UID),
                "automountServiceAccountToken": False,
                "terminationGracePeriodSeconds": GRACE_SECONDS,
                "containers": [container],
                "volumes": [{"name": "config", "configMap": {
                    "name": config_name, "items": [{"key": "relay.json",
                                                    "path": "relay.json"}]}}],
            }),
        },
    }
    return [c.config_map_files(config_name, "relay", {"relay.json": config_text}), statefulset,
            c.service("relay", "relay", [("metrics", RELAY_METRICS_PORT)], headless=True)]


def redis_objects(backend: Backend) -> list[dict]:
    container = {
        "name": "redis", "image": IMAGES["redis"],
        "command": ["redis-server"],
        # $(REDIS_PASSWORD) is expanded by the kubelet from the Secret, not written here.
        "args": ["--appendonly", "yes", "--appendfsync", "everysec", "--dir", "/data",
                 "--requirepass", "$(REDIS_PASSWORD)"],
        "env": [c.secret_env("REDIS_PASSWORD", c.REDIS_SECRET, "REDIS_PASSWORD"),
                c.secret_env("REDISCLI_AUTH", c.REDIS_SECRET, "REDIS_PASSWORD")],
        "ports": [{"name": "redis", "containerPort": 6379, "protocol": "TCP"}],
        "readinessProbe": {"exec": {"command": ["redis-cli", "ping"]}, "periodSeconds": 5,
                           "timeoutSeconds": 3, "failureThreshold": 3},
        "livenessProbe": {"exec": {"command": ["redis-cli", "ping"]}, "periodSeconds": 10,
                          "timeoutSeconds": 3, "failureThreshold": 6,
                          "initialDelaySeconds": 10},
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        "resources": c.resources("100m", "256Mi", "1", "1Gi"),
        "securityContext": c.secure(REDIS_UID),
    }
    statefulset = {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": c.metadata("redis", "redis"),
        "spec": {
            "replicas": 1,
            "serviceName": "redis",
            "selector": {"matchLabels": c.labels("redis")},
            "template": c.pod_template("redis", {
                "securityContext": c.pod_security(REDIS_UID, fs_group=REDIS_UID),
                "automountServiceAccountToken": False,
                "terminationGracePeriodSeconds": GRACE_SECONDS,
                "containers": [container],
            }),
            "volumeClaimTemplates": [{
                "metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"],
                         "resources": {"requests": {"storage": "5Gi"}}},
            }],
        },
    }
    return [statefulset, c.service("redis", "redis", [("redis", 6379)], headless=True)]


def render(backend: Backend) -> dict[str, list[c.Resource]]:
    return {"postgrest": postgrest_objects(backend), "graphql": graphql_objects(backend),
            "gateway": gateway_objects(backend),
            "relay": relay_objects(backend), "redis": redis_objects(backend)}


def _fetch_key_set(backend: Backend, config_name: str, volumes: list[dict],
                   mounts: list[dict], init: list[dict]) -> None:
    """The OAuth2 key set for a pod's server (PostgREST, GraphQL): an init container runs
    jwks.py from the config map into an emptyDir the server mounts read-only, so the pod
    starts only with a checked key set, as compose's `jwks` job does."""
    volumes.extend([{"name": "jwks", "emptyDir": {"sizeLimit": "1Mi"}},
                    {"name": "jwks-script", "configMap": {"name": config_name, "items": [
                        {"key": "jwks.py", "path": "jwks.py"}]}}])
    mounts.append({"name": "jwks", "mountPath": postgrest.JWKS_DIR, "readOnly": True})
    init.append({
        "name": "jwks", "image": IMAGES["jwks"],
        "command": ["python", "/etc/crud/jwks.py", "--out", postgrest.JWKS_PATH,
                    backend.auth.jwks_url],
        "env": [c.secret_env("PGRST_JWT_SECRET", c.JWT_SECRET, "PGRST_JWT_SECRET",
                             optional=not backend.rules)],
        "volumeMounts": [{"name": "jwks", "mountPath": postgrest.JWKS_DIR},
                         {"name": "jwks-script", "mountPath": "/etc/crud", "readOnly": True}],
        "resources": c.resources("50m", "64Mi", "200m", "128Mi"),
        "securityContext": c.secure(NOBODY),
    })
