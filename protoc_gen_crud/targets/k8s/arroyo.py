"""Arroyo on Kubernetes: one controller pod (`arroyo cluster`: API, controller and compiler)
that starts a worker pod per pipeline through Arroyo's Kubernetes scheduler, its pipeline
database in the CloudNativePG cluster, and pipeline registration as a Job.

Configuration keys are Arroyo 0.12.1's (crates/arroyo-rpc/default.toml and config.rs:
`ARROYO__A__B_C` is `a.b-c`). Where checkpoints go (and which scheduler runs workers) comes
from the ConfigMap `arroyo-storage`, which each overlay sets: object storage in prod, a
volume with the process scheduler in dev.
"""

from __future__ import annotations

from ...model import Backend
from ...rendering import HEADER, dump_yaml
from .. import arroyo as arroyo_target
from ..compose import ARROYO_PORT, IMAGES
from ..observability import ARROYO_ADMIN_PORT
from . import common as c

GRPC_PORT = 5116  # controller.rpc-port: workers report to the controller here
COMPILER_PORT = 5117
CONFIG_DIR = "/etc/arroyo"
STORAGE = "arroyo-storage"
ARROYO_UID = 1000
WORKER_ACCOUNT = "arroyo-worker"
REGISTER_UID = 65534
STORAGE_KEYS = {  # ConfigMap key -> Arroyo setting
    "scheduler": "ARROYO__CONTROLLER__SCHEDULER",
    "checkpoint-url": "ARROYO__CHECKPOINT_URL",
    "artifact-url": "ARROYO__COMPILER__ARTIFACT_URL",
}
OBJECT_STORAGE_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION",
                       "AWS_ENDPOINT")


def _storage_env() -> list[dict]:
    env = [{"name": var, "valueFrom": {"configMapKeyRef": {"name": STORAGE, "key": key}}}
           for key, var in STORAGE_KEYS.items() if key != "scheduler"]
    # Credentials for object storage, when the cluster does not grant them to the pod.
    env += [c.secret_env(key, c.OBJECT_STORAGE_SECRET, key, optional=True)
            for key in OBJECT_STORAGE_KEYS]
    return env


def _secrets_env(backend: Backend) -> list[dict]:
    if backend.auth.type == "NONE":
        return []
    # The queries' `{{ CRUD_PIPELINE_TOKEN }}`: planning and the workers' connectors read it.
    return [c.secret_env(arroyo_target.TOKEN_VARIABLE, c.PIPELINE_TOKEN_SECRET,
                         arroyo_target.TOKEN_VARIABLE)]


def config(backend: Backend) -> dict:
    """config.yaml, read by the controller and by every worker pod it starts."""
    return {
        "controller-endpoint": f"http://arroyo:{GRPC_PORT}",
        "logging": {"format": "json"},
        "api": {"http-port": ARROYO_PORT},
        "admin": {"http-port": ARROYO_ADMIN_PORT},
        "controller": {"rpc-port": GRPC_PORT},
        "compiler": {"rpc-port": COMPILER_PORT},
        "database": {"type": "postgres", "postgres": {
            "host": c.PRIMARY, "port": c.PG_PORT, "database-name": c.ARROYO_DATABASE,
            "user": c.ARROYO_ROLE}},
        "kubernetes-scheduler": {
            # Worker pods belong to the controller pod (name and uid from the environment):
            # they go when it goes.
            "controller": {"apiVersion": "v1", "kind": "Pod"},
            "resource-mode": "per-slot",
            "worker": {
                "name-prefix": "arroyo",
                "image": IMAGES["arroyo"],
                "image-pull-policy": "IfNotPresent",
                "service-account-name": WORKER_ACCOUNT,
                "labels": {**c.labels("arroyo-worker"),
                           "app.kubernetes.io/component": "arroyo-worker"},
                "resources": c.resources("500m", "512Mi", "1", "1Gi"),
                "task-slots": 4,
                "env": [*_storage_env(), *_secrets_env(backend)],
                "volumes": [{"name": "config", "configMap": {"name": "arroyo-config"}},
                            {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
                "volume-mounts": [{"name": "config", "mountPath": CONFIG_DIR,
                                   "readOnly": True},
                                  {"name": "tmp", "mountPath": "/tmp"}],
                "command": f"/app/arroyo --config-dir {CONFIG_DIR} worker",
            },
        },
    }


def _rbac() -> list[dict]:
    """The controller creates, watches and deletes its worker pods (and their services) in
    its own namespace; nothing else, nowhere else."""
    rules = [{"apiGroups": [""], "resources": ["pods", "services"],
              "verbs": ["create", "get", "list", "watch", "update", "delete",
                        "deletecollection"]}]
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": c.metadata("arroyo", "arroyo")},
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": c.metadata(WORKER_ACCOUNT, "arroyo"),
         "automountServiceAccountToken": False},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": c.metadata("arroyo-scheduler", "arroyo"), "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": c.metadata("arroyo-scheduler", "arroyo"),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                     "name": "arroyo-scheduler"},
         "subjects": [{"kind": "ServiceAccount", "name": "arroyo"}]},
    ]


def _field(name: str, path: str) -> dict:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def controller(backend: Backend) -> list[c.Resource]:
    mounts = [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
              {"name": "tmp", "mountPath": "/tmp"}]
    db_env = [c.secret_env("ARROYO__DATABASE__POSTGRES__PASSWORD", c.ARROYO_DB_SECRET,
                           "password")]
    env = [
        *db_env,
        _field("ARROYO__KUBERNETES_SCHEDULER__NAMESPACE", "metadata.namespace"),
        _field("ARROYO__KUBERNETES_SCHEDULER__CONTROLLER__NAME", "metadata.name"),
        _field("ARROYO__KUBERNETES_SCHEDULER__CONTROLLER__UID", "metadata.uid"),
        {"name": STORAGE_KEYS["scheduler"], "valueFrom": {"configMapKeyRef": {
            "name": STORAGE, "key": "scheduler"}}},
        *_storage_env(),
        *_secrets_env(backend),
    ]
    security = c.secure(ARROYO_UID)
    migrate = {
        "name": "migrate-database", "image": IMAGES["arroyo"],
        "command": ["/app/arroyo", "--config-dir", CONFIG_DIR, "migrate", "--wait", "300"],
        "env": db_env, "volumeMounts": mounts,
        "resources": c.resources("100m", "128Mi", "500m", "256Mi"),
        "securityContext": security,
    }
    container = {
        "name": "arroyo", "image": IMAGES["arroyo"],
        "command": ["/app/arroyo", "--config-dir", CONFIG_DIR, "cluster"],
        "env": env,
        "ports": [{"name": "http", "containerPort": ARROYO_PORT, "protocol": "TCP"},
                  {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
                  {"name": "compiler", "containerPort": COMPILER_PORT, "protocol": "TCP"},
                  {"name": "admin", "containerPort": ARROYO_ADMIN_PORT, "protocol": "TCP"}],
        "readinessProbe": c.http_probe("/status", "admin", period=10),
        "livenessProbe": c.http_probe("/status", "admin", period=10, delay=10),
        "volumeMounts": mounts,
        "resources": c.resources("500m", "1Gi", "2", "2Gi"),
        "securityContext": security,
    }
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": c.metadata("arroyo", "arroyo"),
        "spec": {
            # A singleton: two controllers would schedule the same pipelines twice.
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": c.labels("arroyo")},
            "template": c.pod_template("arroyo", {
                "serviceAccountName": "arroyo",
                # fsGroup: a volume for local checkpoints (dev) is writable by the user.
                "securityContext": c.pod_security(ARROYO_UID, fs_group=ARROYO_UID),
                "initContainers": [migrate],
                "containers": [container],
                "volumes": [{"name": "config", "configMap": {"name": "arroyo-config"}},
                            {"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}}],
            }),
        },
    }
    return [
        c.config_map_files("arroyo-config", "arroyo",
                           {"config.yaml": HEADER + dump_yaml(config(backend))}),
        *_rbac(),
        deployment,
        c.service("arroyo", "arroyo", [("http", ARROYO_PORT), ("grpc", GRPC_PORT),
                                       ("compiler", COMPILER_PORT),
                                       ("admin", ARROYO_ADMIN_PORT)]),
    ]


def query_files(backend: Backend) -> dict[str, str]:
    return {path.removeprefix("arroyo-queries/"): text
            for path, text in arroyo_target.render(backend).items()}


def registration(backend: Backend) -> list[c.Resource]:
    """register.py as a Job, named after a hash of the queries: a changed query is a new
    Job that replaces the pipeline; an unchanged one leaves it alone."""
    files = query_files(backend)
    name = "arroyo-register-" + c.digest(*(f"{k}\n{v}" for k, v in sorted(files.items())))
    container = {
        "name": "register", "image": IMAGES["arroyo-register"],
        "command": ["python", "/queries/register.py"],
        "env": [{"name": "ARROYO_API", "value": f"http://arroyo:{ARROYO_PORT}/api/v1"},
                {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"}],
        "volumeMounts": [{"name": "queries", "mountPath": "/queries", "readOnly": True}],
        "resources": c.resources("50m", "64Mi", "200m", "128Mi"),
        "securityContext": c.secure(REGISTER_UID),
    }
    job = {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": c.metadata(name, "arroyo-register"),
        "spec": {
            "backoffLimit": 10,
            "ttlSecondsAfterFinished": 86400,
            "template": c.pod_template("arroyo-register", {
                "restartPolicy": "OnFailure",
                "securityContext": c.pod_security(REGISTER_UID),
                "automountServiceAccountToken": False,
                "containers": [container],
                "volumes": [{"name": "queries", "configMap": {"name": name}}],
            }),
        },
    }
    return [c.config_map_files(name, "arroyo-register", files), job]


def storage_defaults(backend: Backend) -> dict[str, str]:
    """The base's storage: the Kubernetes scheduler with checkpoints in object storage
    (the bucket is the prod overlay's parameter)."""
    return {"scheduler": "kubernetes",
            "checkpoint-url": f"s3://arroyo-checkpoints/{c.part_of(backend)}/checkpoints",
            "artifact-url": f"s3://arroyo-checkpoints/{c.part_of(backend)}/artifacts"}


def render(backend: Backend) -> dict[str, list[c.Resource]]:
    if not backend.rules:
        return {}
    return {"arroyo": [*controller(backend), *registration(backend)]}
