"""Dapr target: `dapr/components/` — the event side of the backend for Dapr sidecars.

- crud-pubsub (pubsub.redis) reads the very streams crud-relay writes: each entity's topic is
  its Redis stream (`crud.<entity>`), each entry a CloudEvent in the `data` field.
- crud-state (state.redis) for applications that keep state next to the events.
- crud-secrets (secretstores.local.env): Redis's password and TLS switch come from the
  sidecar's environment, never from these files.
- one declarative Subscription per subscriber named in the config, a Resiliency policy, and
  HTTPEndpoints for PostgREST and the gateway.
Built as data, dumped with PyYAML, one resource per file.
"""

from __future__ import annotations

from ..model import Backend
from ..rendering import HEADER, dump_yaml
from .relay import PUBSUB, topic

SECRET_STORE = "crud-secrets"
STATE_STORE = "crud-state"


def _secret(name: str) -> dict:
    return {"secretKeyRef": {"name": name, "key": name}}


def _redis_connection() -> list[dict]:
    return [
        {"name": "redisHost", "value": "redis:6379"},
        {"name": "redisPassword", **_secret("REDIS_PASSWORD")},
        {"name": "enableTLS", **_secret("REDIS_ENABLE_TLS")},
    ]


def _component(name: str, kind: str, metadata: list[dict], secrets: bool = True) -> dict:
    resource = {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name},
        "spec": {"type": kind, "version": "v1", "metadata": metadata},
    }
    if secrets:
        resource["auth"] = {"secretStore": SECRET_STORE}
    return resource


def resources(backend: Backend) -> dict[str, dict]:
    max_len = max((e.stream_max_len for e in backend.streamed), default=100000)
    out = {
        "pubsub.yaml": _component(PUBSUB, "pubsub.redis", [
            *_redis_connection(),
            {"name": "consumerID", "value": "{appID}"},
            {"name": "maxLenApprox", "value": str(max_len)},
            {"name": "redeliverInterval", "value": "30s"},
            {"name": "processingTimeout", "value": "60s"},
            {"name": "concurrency", "value": "10"},
        ]),
        "statestore.yaml": _component(STATE_STORE, "state.redis", [
            *_redis_connection(),
            {"name": "keyPrefix", "value": "appid"},
        ]),
        "secretstore.yaml": _component(SECRET_STORE, "secretstores.local.env", [],
                                       secrets=False),
        "resiliency.yaml": {
            "apiVersion": "dapr.io/v1alpha1",
            "kind": "Resiliency",
            "metadata": {"name": "crud-resiliency"},
            "spec": {
                "policies": {
                    "timeouts": {"general": "5s", "api": "30s"},
                    "retries": {
                        "events": {"policy": "exponential", "maxInterval": "15s",
                                   "maxRetries": 10},
                        "calls": {"policy": "constant", "duration": "1s", "maxRetries": 3},
                    },
                    "circuitBreakers": {
                        "backend": {"maxRequests": 1, "interval": "10s", "timeout": "30s",
                                    "trip": "consecutiveFailures >= 5"},
                    },
                },
                "targets": {
                    "components": {
                        PUBSUB: {"inbound": {"retry": "events"},
                                 "outbound": {"retry": "calls", "circuitBreaker": "backend"}},
                        STATE_STORE: {"outbound": {"retry": "calls", "timeout": "general",
                                                   "circuitBreaker": "backend"}},
                    },
                    "apps": {
                        "crud-api": {"timeout": "api", "retry": "calls",
                                     "circuitBreaker": "backend"},
                        "crud-gateway": {"timeout": "api", "retry": "calls",
                                         "circuitBreaker": "backend"},
                    },
                },
            },
        },
        "httpendpoint-api.yaml": {
            "apiVersion": "dapr.io/v1alpha1",
            "kind": "HTTPEndpoint",
            "metadata": {"name": "crud-api"},
            "spec": {"baseUrl": "http://crud:3000"},
        },
        "httpendpoint-gateway.yaml": {
            "apiVersion": "dapr.io/v1alpha1",
            "kind": "HTTPEndpoint",
            "metadata": {"name": "crud-gateway"},
            "spec": {"baseUrl": "http://proxy:80"},
        },
    }
    for entity in backend.streamed:
        for subscriber in entity.subscribers:
            name = f"{entity.name}-{subscriber.app_id}".replace("_", "-")
            out[f"subscription-{name}.yaml"] = {
                "apiVersion": "dapr.io/v2alpha1",
                "kind": "Subscription",
                "metadata": {"name": name},
                "spec": {
                    "pubsubname": PUBSUB,
                    "topic": topic(entity.name),
                    "routes": {"default": subscriber.route},
                },
                "scopes": [subscriber.app_id],
            }
    return dict(sorted(out.items()))


def render(backend: Backend) -> dict[str, str]:
    return {
        f"dapr/components/{name}": HEADER + dump_yaml(resource)
        for name, resource in resources(backend).items()
    }
