"""Kubernetes target: `k8s/`, a kustomize base with dev and prod overlays.

The same backend as the compose stack, on engines built for a cluster: CloudNativePG for
PostgreSQL, the Dapr control plane, Arroyo's Kubernetes scheduler, PostgREST and the gateway
as stateless replicas. Everything is rendered here as data (no Helm, no templating at apply
time): `kubectl apply -k k8s/overlays/prod`. The files of other targets (migrations,
postgrest.conf, nginx.conf and Lua, relay.json, Dapr resources, Arroyo queries, alert rules
and the dashboard) are embedded from those targets' own output, so the cluster runs exactly
what compose runs.
"""

from __future__ import annotations

from ...model import Backend
from ...rendering import HEADER, dump_yaml
from . import arroyo, common, dapr, database, kustomize, readme, services

FOLDERS = ("postgres", "migrations", "postgrest", "gateway", "relay", "redis", "dapr",
           "arroyo")


def base_objects(backend: Backend) -> dict[str, list[dict]]:
    """Folder of the base -> its objects, in apply-independent order."""
    found: dict[str, list[dict]] = {}
    for part in (database.render(backend), services.render(backend), dapr.render(backend),
                 arroyo.render(backend)):
        found.update(part)
    return {folder: found[folder] for folder in FOLDERS if found.get(folder)}


def _yaml(data: object) -> str:
    return HEADER + dump_yaml(data)


def render(backend: Backend) -> dict[str, str]:
    root = common.FOLDER
    files: dict[str, str] = {}
    base = base_objects(backend)
    for folder, objects in base.items():
        names = [kustomize.file_name(o) for o in objects]
        if len(set(names)) != len(names):
            raise RuntimeError(f"two objects of one kind share a name in {folder}")
        for name, obj in zip(names, objects, strict=True):
            files[f"{root}/base/{folder}/{name}"] = _yaml(obj)
        extra = None
        if folder == "arroyo":
            extra = {"configMapGenerator": [kustomize.storage_generator(
                arroyo.storage_defaults(backend))]}
        files[f"{root}/base/{folder}/kustomization.yaml"] = _yaml(
            kustomize.folder_kustomization(objects, extra))
    files[f"{root}/base/kustomization.yaml"] = _yaml(
        kustomize.base_kustomization(backend, list(base)))
    for prefix, content in (
            ("components/observability", kustomize.observability_component(backend)),
            ("overlays/dev", kustomize.dev_overlay(backend)),
            ("overlays/prod", kustomize.prod_overlay(backend))):
        for name, data in content.items():
            path = f"{root}/{prefix}/{name}"
            files[path] = data if isinstance(data, str) else _yaml(data)
    files[f"{root}/README.md"] = readme.render(backend)
    return dict(sorted(files.items()))
