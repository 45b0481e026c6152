"""Shared pieces of the Kubernetes target: names, labels, images, secrets, container defaults.

Service names are the compose service names (`crud`, `proxy`, `redis`, `arroyo`) because the
files other targets generate (nginx.conf, the Arroyo queries, the Dapr HTTPEndpoints) name
their peers by those host names; in one namespace a Service of that name resolves the same.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from ...model import Backend
from ..compose import IMAGES

FOLDER = "k8s"
CLUSTER = "postgres"  # the CloudNativePG Cluster; its primary's Service is `postgres-rw`
PRIMARY = f"{CLUSTER}-rw"
SUPERUSER_SECRET = f"{CLUSTER}-superuser"  # made by CloudNativePG (enableSuperuserAccess)
PG_PORT = 5432

# Secrets the user creates before applying (k8s/README.md says how); never generated.
AUTHENTICATOR_SECRET = "crud-authenticator"
RELAY_SECRET = "crud-relay"
ARROYO_DB_SECRET = "crud-arroyo-db"
JWT_SECRET = "crud-jwt"
REDIS_SECRET = "crud-redis"
PIPELINE_TOKEN_SECRET = "crud-pipeline-token"
OBJECT_STORAGE_SECRET = "crud-arroyo-object-storage"

ARROYO_DATABASE = "arroyo"
ARROYO_ROLE = "arroyo"
SSE_HEARTBEAT_SECONDS = 15  # the gateway's SSE heartbeat (CRUD_SSE_HEARTBEAT_MS)
INGRESS_READ_TIMEOUT_SECONDS = 3600  # far above the heartbeat: idle SSE streams stay open

_VERSION = re.compile(r":(\d+)\.(\d+)")


def postgres_image() -> str:
    """CloudNativePG's operand image of the very PostgreSQL release compose pins
    (`postgres:18.6-bookworm` -> `18.6`), in the tag format CloudNativePG documents
    (`<major>.<minor>-system-trixie`, its default image flavour)."""
    found = _VERSION.search(IMAGES["database"])
    if not found:
        raise ValueError(f"cannot read a PostgreSQL version from {IMAGES['database']!r}")
    return f"ghcr.io/cloudnative-pg/postgresql:{found[1]}.{found[2]}-system-trixie"


def relay_image(backend: Backend) -> str:
    """The relay is built from `relay/` (as compose builds it) and pushed by the user; the
    overlays' `images:` entry is where its registry goes."""
    return "crud-relay:" + backend.database.name.replace("_", "-")


def part_of(backend: Backend) -> str:
    return backend.database.name.replace("_", "-")


def labels(component: str) -> dict[str, str]:
    """The selector labels of one component's pods."""
    return {"app.kubernetes.io/name": component}


def metadata(name: str, component: str, **extra: object) -> dict:
    return {"name": name, "labels": {**labels(component),
                                     "app.kubernetes.io/component": component}, **extra}


def digest(*texts: str, length: int = 10) -> str:
    """A short content hash: a changed input gives a new object name (a new Job, a rolled
    Deployment) instead of an edit Kubernetes would refuse or ignore."""
    h = hashlib.sha256()
    for text in texts:
        h.update(len(text).to_bytes(8, "big"))
        h.update(text.encode())
    return h.hexdigest()[:length]


def resources(cpu: str, memory: str, cpu_limit: str | None = None,
              memory_limit: str | None = None) -> dict:
    return {"requests": {"cpu": cpu, "memory": memory},
            "limits": {"cpu": cpu_limit or cpu, "memory": memory_limit or memory}}


def secure(user: int | None = None, read_only: bool = True) -> dict:
    """A container's security context: no privilege escalation, no capabilities, read-only
    root filesystem unless the image must write outside its volumes."""
    context: dict = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": read_only,
                     "capabilities": {"drop": ["ALL"]}}
    if user is not None:
        context.update(runAsNonRoot=True, runAsUser=user, runAsGroup=user)
    return context


def pod_security(user: int | None = None, fs_group: int | None = None) -> dict:
    context: dict = {"seccompProfile": {"type": "RuntimeDefault"}}
    if user is not None:
        context.update(runAsNonRoot=True, runAsUser=user, runAsGroup=user)
    if fs_group is not None:
        context["fsGroup"] = fs_group
    return context


def secret_env(name: str, secret: str, key: str, optional: bool = False) -> dict:
    ref: dict = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def http_probe(path: str, port: str | int, period: int = 10, failures: int = 3,
               delay: int = 0) -> dict:
    probe: dict = {"httpGet": {"path": path, "port": port}, "periodSeconds": period,
                   "timeoutSeconds": 3, "failureThreshold": failures}
    if delay:
        probe["initialDelaySeconds"] = delay
    return probe


def service(name: str, component: str, ports: list[tuple[str, int]],
            headless: bool = False) -> dict:
    spec: dict = {"selector": labels(component),
                  "ports": [{"name": port_name, "port": port, "targetPort": port_name,
                             "protocol": "TCP"} for port_name, port in ports]}
    if headless:
        spec["clusterIP"] = "None"
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata(name, component),
            "spec": spec}


def config_map(name: str, component: str, data: dict[str, str]) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata(name, component),
            "data": dict(sorted(data.items()))}


@dataclass(frozen=True)
class FileConfigMap:
    """A ConfigMap kustomize generates from files kept beside the kustomization
    (`files/<key>`): embedded files (SQL, nginx.conf, Lua, JSON) stay readable and
    byte-identical on disk. No hash suffix: the name is ours, already a content hash where
    a change must roll the pods."""

    name: str
    component: str
    files: tuple[tuple[str, str], ...]

    def generator(self) -> dict:
        return {"name": self.name,
                "files": [f"{key}={FILES}/{key}" for key, _ in self.files],
                "options": {"disableNameSuffixHash": True,
                            "labels": metadata(self.name, self.component)["labels"]}}


FILES = "files"
Resource = dict | FileConfigMap  # what a component folder holds


def config_map_files(name: str, component: str, data: dict[str, str]) -> FileConfigMap:
    return FileConfigMap(name, component, tuple(sorted(data.items())))


def pdb(name: str, component: str, min_available: int = 1) -> dict:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": metadata(name, component),
            "spec": {"minAvailable": min_available, "selector": {"matchLabels": labels(component)}}}


def pod_template(component: str, spec: dict, annotations: dict | None = None) -> dict:
    meta: dict = {"labels": {**labels(component), "app.kubernetes.io/component": component}}
    if annotations:
        meta["annotations"] = dict(sorted(annotations.items()))
    return {"metadata": meta, "spec": spec}
