"""Dapr on Kubernetes: the components, subscriptions, resiliency and HTTP endpoints the
dapr target generates, as namespaced resources loaded by the control plane.

Two changes, both because Kubernetes has what the compose sidecar lacks: secrets are read
from Kubernetes Secrets (Dapr's built-in `kubernetes` store, used when a component names no
`auth.secretStore`), so the environment store `crud-secrets` is not deployed; and Redis's
TLS switch, an environment variable under compose, is the plain value `false` (the Redis in
this base has no TLS). Every other value is the dapr target's, unchanged. Components get
`scopes`: the app id of the sidecar on PostgREST's pods plus each configured subscriber; so
does the Resiliency.
"""

from __future__ import annotations

import copy

from ...model import Backend
from .. import dapr as dapr_target
from . import common as c
from .services import DAPR_APP_ID


def app_ids(backend: Backend) -> list[str]:
    subscribers = {s.app_id for e in backend.streamed for s in e.subscribers}
    return [DAPR_APP_ID, *sorted(subscribers - {DAPR_APP_ID})]


def _kubernetes_secrets(component: dict) -> dict:
    component = copy.deepcopy(component)
    component.pop("auth", None)
    metadata = []
    for item in component["spec"]["metadata"]:
        ref = item.get("secretKeyRef")
        if ref and ref["name"] == "REDIS_ENABLE_TLS":
            item = {"name": item["name"], "value": "false"}
        elif ref:
            item = {"name": item["name"], "secretKeyRef": {"name": c.REDIS_SECRET,
                                                           "key": ref["key"]}}
        metadata.append(item)
    component["spec"]["metadata"] = metadata
    return component


def resources(backend: Backend) -> list[dict]:
    found = []
    for name, resource in dapr_target.resources(backend).items():
        if resource["kind"] == "Component":
            if resource["spec"]["type"].startswith("secretstores.local."):
                continue
            resource = _kubernetes_secrets(resource)
            resource["scopes"] = app_ids(backend)
        else:
            resource = copy.deepcopy(resource)
            if resource["kind"] == "Resiliency":
                resource["scopes"] = app_ids(backend)  # its policies apply to these apps
        resource["metadata"] = {**resource["metadata"],
                                "labels": {"app.kubernetes.io/component": "dapr"}}
        found.append((name, resource))
    return [resource for _, resource in sorted(found, key=lambda item: item[0])]


def render(backend: Backend) -> dict[str, list[c.Resource]]:
    return {"dapr": resources(backend)}
