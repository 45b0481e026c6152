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

FOLDERS = ("postgres", "migrations", "postgrest", "graphql", "gateway", "relay", "redis",
           "dapr", "arroyo")


def base_objects(backend: Backend) -> dict[str, list]:
    """Folder of the base -> its objects and file-generated ConfigMaps."""
    found: dict[str, list] = {}
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
    for folder, parts in base.items():
        objects = [o for o in parts if isinstance(o, dict)]
        maps = [o for o in parts if isinstance(o, common.FileConfigMap)]
        names = [kustomize.file_name(o) for o in objects]
        names += [f"{common.FILES}/{key}" for m in maps for key, _ in m.files]
        if len(set(names)) != len(names):
            raise RuntimeError(f"two files of {folder} share a name")
        for obj in objects:
            files[f"{root}/base/{folder}/{kustomize.file_name(obj)}"] = _yaml(obj)
        for found in maps:
            for key, text in found.files:
                files[f"{root}/base/{folder}/{common.FILES}/{key}"] = text
        generators = [m.generator() for m in maps]
        if folder == "arroyo":
            generators.append(kustomize.storage_generator(arroyo.storage_defaults(backend)))
        files[f"{root}/base/{folder}/kustomization.yaml"] = _yaml(
            kustomize.folder_kustomization(objects, generators))
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
