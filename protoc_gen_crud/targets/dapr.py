"""Dapr target: `dapr/components/` — the event side of the backend for Dapr sidecars.

- crud-pubsub (pubsub.redis) reads the very streams crud-relay writes: each entity's topic is
  its Redis stream (`crud.<entity>`), each entry a CloudEvent in the `data` field. The topics
  are protected: no app may publish to them (only the relay writes them), and only the
  subscribers named in the config may subscribe.
- crud-state (state.redis) for applications that keep state next to the events.
- crud-secrets (secretstores.local.env): Redis's password and TLS switch come from the
  sidecar's environment, never from these files.
- one declarative Subscription per subscriber named in the config, a Resiliency policy, and
  HTTPEndpoints for PostgREST and the gateway.
Built as data, dumped with PyYAML, one resource per file.

Every value is written in the format daprd 1.14.4 with components-contrib v1.14.4 reads;
tests/dapr_rules.py reproduces that decoding and the timing it leads to.
"""

from __future__ import annotations

from ..model import Backend
from ..rendering import HEADER, dump_yaml
from .relay import PUBSUB, topic

SECRET_STORE = "crud-secrets"
STATE_STORE = "crud-state"

# pubsub.redis delivery. One worker (`concurrency`) takes messages in stream order, so a
# subscriber gets each topic's changes in commit order; `queueDepth` 1 keeps at most three
# messages between Redis and that worker (one in hand, one queued, one read), so none of
# them waits long enough to be reclaimed as idle. Durations are whole milliseconds:
# components-contrib v1.14.4 reads `redeliverInterval` only as an unsigned integer of
# milliseconds and silently keeps its 15 s default for anything else ("30s" included).
CONCURRENCY = 1
QUEUE_DEPTH = 1
PROCESSING_TIMEOUT_MS = 90_000  # at least; more for apps subscribed to many topics
REDELIVER_INTERVAL_MS = 10_000
# Inbound retries of one delivery to the app: each attempt at most DELIVERY_TIMEOUT, then
# exponential back-off (from dapr/kit's 500 ms start: Dapr 1.14's Resiliency retry has only
# policy, duration, maxInterval and maxRetries). The whole budget, times the three messages
# in flight, stays below PROCESSING_TIMEOUT_MS, so a message is never reclaimed while it is
# still being retried.
DELIVERY_TIMEOUT = "5s"
EVENTS_RETRY = {"policy": "exponential", "maxInterval": "2s", "maxRetries": 3}
# The longest one delivery takes with its retries: 4 attempts of 5 s and back-off waits of
# under 4 s in all (tests/dapr_rules.py computes it from Dapr's own back-off rules).
WORST_DELIVERY_MS = 24_000


def processing_timeout_ms(backend: Backend) -> int:
    """processingTimeout above the time the last message a sidecar holds can take.

    pubsub.redis (components-contrib v1.14.4 pubsub/redis/redis.go) runs one poller per
    subscribed topic (Subscribe, 133-163), each reading up to queueDepth messages (271) and
    blocking to put them on the one queue of queueDepth (87, 169-181) that `concurrency`
    workers drain: an app on K topics holds concurrency + queueDepth * (1 + K) messages,
    done one after another in the worst case."""
    most = max((len(names) for names in _topics_by_app(backend).values()), default=1)
    held = CONCURRENCY + QUEUE_DEPTH * (1 + most)
    needed = -(-held // CONCURRENCY) * WORST_DELIVERY_MS + 10_000  # 10 s to spare
    return max(PROCESSING_TIMEOUT_MS, -(-needed // 10_000) * 10_000)


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


def _topics_by_app(backend: Backend) -> dict[str, set[str]]:
    """The change topics each configured subscriber app subscribes to."""
    by_app: dict[str, set[str]] = {}
    for entity in backend.streamed:
        for subscriber in entity.subscribers:
            by_app.setdefault(subscriber.app_id, set()).add(topic(entity.name))
    return by_app


def _scopes(backend: Backend) -> list[dict]:
    """protectedTopics and subscriptionScopes (dapr v1.14.4 pkg/scopes/scopes.go): a
    protected topic may be published or subscribed to only by an app whose scope lists it.
    No app gets a publishing scope, so only the relay writes the change topics."""
    topics = sorted(topic(e.name) for e in backend.streamed)
    if not topics:
        return []
    by_app = _topics_by_app(backend)
    scoped = [{"name": "protectedTopics", "value": ",".join(topics)}]
    if by_app:
        scoped.append({"name": "subscriptionScopes", "value": ";".join(
            f"{app}={','.join(sorted(names))}" for app, names in sorted(by_app.items()))})
    return scoped


def resources(backend: Backend) -> dict[str, dict]:
    # Retention of the change topics is crud-relay's (it trims behind the consumer groups);
    # maxLenApprox only bounds topics apps publish themselves on this component.
    max_len = max((e.stream_max_len for e in backend.streamed), default=100000)
    out = {
        "pubsub.yaml": _component(PUBSUB, "pubsub.redis", [
            *_redis_connection(),
            {"name": "consumerID", "value": "{appID}"},
            {"name": "maxLenApprox", "value": str(max_len)},
            {"name": "redeliverInterval", "value": str(REDELIVER_INTERVAL_MS)},
            {"name": "processingTimeout", "value": str(processing_timeout_ms(backend))},
            {"name": "concurrency", "value": str(CONCURRENCY)},
            {"name": "queueDepth", "value": str(QUEUE_DEPTH)},
            *_scopes(backend),
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
                    "timeouts": {"general": "5s", "api": "30s", "delivery": DELIVERY_TIMEOUT},
                    "retries": {
                        "events": dict(EVENTS_RETRY),
                        "calls": {"policy": "constant", "duration": "1s", "maxRetries": 3},
                    },
                    "circuitBreakers": {
                        "backend": {"maxRequests": 1, "interval": "10s", "timeout": "30s",
                                    "trip": "consecutiveFailures >= 5"},
                    },
                },
                "targets": {
                    "components": {
                        PUBSUB: {"inbound": {"retry": "events", "timeout": "delivery"},
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
