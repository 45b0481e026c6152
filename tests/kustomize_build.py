"""A small kustomize in Python: enough of `kubectl kustomize` for the layouts the k8s target
writes, so the rendered manifests are checked where kubectl is not installed. Where it is,
test_k8s compares this with kubectl's own build, so the two cannot drift apart.

Supported: `resources` (files and folders), `components`, `configMapGenerator` (literals,
env files, files, labels, behavior create/merge, always without a name hash),
strategic-merge `patches` from files (lists of named items merge by name; `$patch: delete`
removes the object), `images` and `labels` without selectors. Anything else in a
kustomization is an error, not ignored.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

KNOWN = {"apiVersion", "kind", "resources", "components", "configMapGenerator", "patches",
         "images", "labels"}


def _key(obj: dict) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


def merge(base: object, patch: object) -> object:
    """Strategic merge as kustomize does it for these kinds: maps merge, lists of maps with
    a `name` merge item by item (new items first), other lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if (isinstance(base, list) and isinstance(patch, list) and patch
            and all(isinstance(i, dict) and "name" in i for i in base + patch)):
        # Items the patch adds come first, as kustomize's merge puts them.
        out_list = [copy.deepcopy(i) for i in base]
        added = []
        for item in patch:
            index = next((n for n, i in enumerate(out_list) if i["name"] == item["name"]), None)
            if index is None:
                added.append(copy.deepcopy(item))
            else:
                out_list[index] = merge(out_list[index], item)
        return added + out_list
    return copy.deepcopy(patch)


def _env_file(path: Path) -> dict[str, str]:
    data = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            data[key.strip()] = value
    return data


def _generate(folder: Path, spec: dict, objects: list[dict]) -> None:
    unknown = set(spec) - {"name", "literals", "envs", "files", "behavior", "options"}
    options = dict(spec.get("options", {}))
    labels = options.pop("labels", {})
    if unknown or options != {"disableNameSuffixHash": True}:
        raise ValueError(f"unsupported configMapGenerator {spec}")
    data: dict[str, str] = {}
    for literal in spec.get("literals", []):
        key, _, value = literal.partition("=")
        data[key] = value
    for env in spec.get("envs", []):
        data.update(_env_file(folder / env))
    for entry in spec.get("files", []):
        key, _, path = entry.rpartition("=")
        data[key or Path(path).name] = (folder / path).read_text()
    behavior = spec.get("behavior", "create")
    existing = next((o for o in objects if _key(o) == ("ConfigMap", spec["name"])), None)
    if behavior == "create":
        if existing:
            raise ValueError(f"ConfigMap {spec['name']} exists already")
        metadata: dict = {"name": spec["name"]}
        if labels:
            metadata["labels"] = dict(labels)
        objects.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata,
                        "data": dict(sorted(data.items()))})
    elif behavior == "merge":
        if not existing:
            raise ValueError(f"no ConfigMap {spec['name']} to merge into")
        existing["data"] = dict(sorted({**existing.get("data", {}), **data}.items()))
    else:
        raise ValueError(f"unsupported behavior {behavior}")


def _patch(objects: list[dict], patch: dict) -> list[dict]:
    target = _key(patch)
    if not any(_key(o) == target for o in objects):
        raise ValueError(f"patch target {target} not found")
    if patch.get("$patch") == "delete":
        return [o for o in objects if _key(o) != target]
    return [merge(o, patch) if _key(o) == target else o for o in objects]


def build(folder: Path, component: bool = False, objects: list[dict] | None = None) -> list[dict]:
    """The objects `kubectl kustomize folder` would print (order aside)."""
    spec = yaml.safe_load((folder / "kustomization.yaml").read_text())
    if set(spec) - KNOWN:
        raise ValueError(f"{folder}: unsupported fields {set(spec) - KNOWN}")
    if (spec["kind"] == "Component") != component:
        raise ValueError(f"{folder}: kind {spec['kind']}")
    found: list[dict] = list(objects or [])
    for entry in spec.get("resources", []):
        path = folder / entry
        if path.is_dir():
            found += build(path)
        else:
            found += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for entry in spec.get("components", []):
        found = build(folder / entry, component=True, objects=found)
    for generator in spec.get("configMapGenerator", []):
        _generate(folder, generator, found)
    for entry in spec.get("patches", []):
        if set(entry) != {"path"}:
            raise ValueError(f"unsupported patch {entry}")
        found = _patch(found, yaml.safe_load((folder / entry["path"]).read_text()))
    for image in spec.get("images", []):
        found = [_set_image(o, image) for o in found]
    for label in spec.get("labels", []):
        if label.get("includeSelectors") or set(label) - {"pairs", "includeSelectors"}:
            raise ValueError(f"unsupported labels {label}")
        for obj in found:
            obj.setdefault("metadata", {}).setdefault("labels", {}).update(label["pairs"])
    keys = [_key(o) for o in found]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{folder}: duplicate objects")
    return found


def _set_image(obj: dict, image: dict) -> dict:
    obj = copy.deepcopy(obj)
    for container in containers(obj):
        name, _, tag = container["image"].partition(":")
        if name == image["name"]:
            container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"
    return obj


def pod_spec(obj: dict) -> dict | None:
    """The pod spec of a workload (Deployment, StatefulSet, Job), else None."""
    if obj["kind"] in ("Deployment", "StatefulSet", "Job"):
        return obj["spec"]["template"]["spec"]
    return None


def containers(obj: dict) -> list[dict]:
    spec = pod_spec(obj)
    if spec is None:
        return []
    return [*spec.get("initContainers", []), *spec["containers"]]
