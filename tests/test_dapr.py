"""Dapr components: valid resources, documented metadata keys, and wire compatibility.

Dapr cannot run here. Its resources are validated with the JSON schemas of Dapr's CRDs (in
../shared/reference/dapr), component metadata keys against the components' documented
metadata (dapr/components-contrib, pubsub/redis and state/redis metadata.yaml), and the
stream protocol by a consumer that does what pubsub.redis does, on events the real relay
wrote to a real Redis.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import jsonschema
import pytest
import yaml

from .support import EXAMPLES, EXAMPLES_DIR, from_textproto, model_of, shared_file

REFERENCE = "reference/dapr/jsonschema"
# Metadata keys documented for each component type (components-contrib metadata.yaml), plus
# the keys every state store accepts.
DOCUMENTED = {
    "pubsub.redis": {
        "redisHost", "redisUsername", "redisPassword", "sentinelUsername", "sentinelPassword",
        "consumerID", "enableTLS", "clientCert", "clientKey", "redeliverInterval",
        "processingTimeout", "ackOnError", "queueDepth", "concurrency", "redisType", "redisDB",
        "redisMaxRetries", "redisMinRetryInterval", "redisMaxRetryInterval", "dialTimeout",
        "readTimeout", "writeTimeout", "poolSize", "poolTimeout", "maxConnAge", "minIdleConns",
        "idleCheckFrequency", "idleTimeout", "failover", "sentinelMasterName", "maxLenApprox",
        "streamTTL", "useEntraID",
    },
    "state.redis": {
        "redisHost", "redisPassword", "redisUsername", "enableTLS", "clientCert", "clientKey",
        "failover", "sentinelMasterName", "redeliverInterval", "processingTimeout", "redisType",
        "redisDB", "redisMaxRetries", "redisMinRetryInterval", "redisMaxRetryInterval",
        "dialTimeout", "readTimeout", "writeTimeout", "poolSize", "poolTimeout", "maxConnAge",
        "minIdleConns", "idleCheckFrequency", "idleTimeout", "ttlInSeconds", "queryIndexes",
        "actorStateStore", "keyPrefix",
    },
    "secretstores.local.env": {"prefix"},
}
REQUIRED = {"pubsub.redis": {"redisHost"}, "state.redis": {"redisHost"}}


def components(name: str) -> dict[str, dict]:
    files = from_textproto(EXAMPLES_DIR / name / f"{name}.textproto", ["dapr"])
    return {path: yaml.safe_load(text) for path, text in files.items()}


@pytest.mark.parametrize("name", EXAMPLES)
def test_resources_match_dapr_schemas(name):
    reference = shared_file(REFERENCE, "Dapr's reference schemas")
    for path, resource in components(name).items():
        version = resource["apiVersion"].split("/")[1]
        schema = json.loads((reference / f"strict-{resource['kind']}-{version}.json")
                            .read_text())
        jsonschema.validate(resource, schema)
        assert path.startswith("dapr/components/")


@pytest.mark.parametrize("name", EXAMPLES)
def test_component_metadata_keys_are_documented(name):
    for resource in components(name).values():
        if resource["kind"] != "Component":
            continue
        kind = resource["spec"]["type"]
        keys = {item["name"] for item in resource["spec"]["metadata"]}
        assert keys <= DOCUMENTED[kind], keys - DOCUMENTED[kind]
        assert REQUIRED.get(kind, set()) <= keys
        for item in resource["spec"]["metadata"]:
            assert ("value" in item) != ("secretKeyRef" in item)
            if item["name"] in ("redisPassword", "enableTLS"):
                assert "secretKeyRef" in item, "secrets come from the secret store"


def test_subscriptions_follow_the_relay_topics():
    backend = model_of("storefront")
    generated = components("storefront")
    relay = json.loads(from_textproto(EXAMPLES_DIR / "storefront" / "storefront.textproto",
                                      ["relay"])["relay/relay.json"])
    topics = {t["entity"]: t["topic"] for t in relay["tables"]}
    subscriptions = [r for r in generated.values() if r["kind"] == "Subscription"]
    expected = {(e.name, s.app_id, s.route) for e in backend.streamed for s in e.subscribers}
    assert len(subscriptions) == len(expected) == 2
    pubsub = next(r for r in generated.values() if r["kind"] == "Component"
                  and r["spec"]["type"] == "pubsub.redis")
    for sub in subscriptions:
        assert sub["spec"]["pubsubname"] == pubsub["metadata"]["name"] == relay["pubsub"]
        entity = next(e for e, t in topics.items() if t == sub["spec"]["topic"])
        assert (entity, sub["scopes"][0], sub["spec"]["routes"]["default"]) in expected


class PubsubRedisConsumer:
    """What Dapr's pubsub.redis does for one subscriber: a consumer group named consumerID
    created at the start of the stream, XREADGROUP `>`, handler, XACK; and, every
    redeliverInterval, XPENDING + XCLAIM of entries idle longer than processingTimeout."""

    def __init__(self, client, topic: str, consumer_id: str, processing_timeout_ms: int):
        self.client, self.topic, self.group = client, topic, consumer_id
        self.timeout_ms = processing_timeout_ms
        try:
            client.xgroup_create(topic, consumer_id, id="0", mkstream=True)
        except Exception as exc:  # BUSYGROUP: the group exists
            assert "BUSYGROUP" in str(exc)

    def read_new(self, count: int = 100):
        reply = self.client.xreadgroup(self.group, self.group, {self.topic: ">"}, count=count,
                                       block=500)
        return [(i.decode(), f) for _, entries in reply for i, f in entries]

    def reclaim(self):
        pending = self.client.xpending_range(self.topic, self.group, "-", "+", 100)
        idle = [p["message_id"] for p in pending
                if p["time_since_delivered"] >= self.timeout_ms]
        if not idle:
            return []
        claimed = self.client.xclaim(self.topic, self.group, self.group, self.timeout_ms, idle)
        return [(i.decode(), f) for i, f in claimed]

    def ack(self, message_id: str) -> None:
        self.client.xack(self.topic, self.group, message_id)


@pytest.fixture
def shop(make_stack):
    return make_stack(from_textproto(EXAMPLES_DIR / "storefront" / "storefront.textproto"),
                      "dapr_shop")


def test_a_pubsub_redis_consumer_gets_every_change_exactly_once(shop):
    import psycopg

    with psycopg.connect(shop.pg.dsn(shop.database), autocommit=True) as conn:
        for i in range(30):
            conn.execute("UPDATE shop.product SET stock = %s WHERE sku = 'LAP-1'", (i,))
    topic = "crud.product"
    deadline = time.monotonic() + 10
    while shop.redis.client().xlen(topic) < 30 and time.monotonic() < deadline:
        time.sleep(0.05)
    stream_ids = [i.decode() for i, _ in shop.redis.client().xrange(topic)]
    assert len(stream_ids) == 30

    acks: Counter[str] = Counter()
    consumer = PubsubRedisConsumer(shop.redis.client(), topic, "inventory",
                                   processing_timeout_ms=300)
    # The first delivery: the handler succeeds for half the messages, then the app dies.
    first = consumer.read_new()
    assert [i for i, _ in first] == stream_ids
    for message_id, fields in first:
        event = json.loads(fields[b"data"])
        assert event["specversion"] == "1.0" and event["id"] == message_id
        assert event["type"] == "crud.product.update"
        assert event["datacontenttype"] == "application/json"
        assert (event["topic"], event["pubsubname"]) == (topic, "crud-pubsub")
        assert event["data"]["table_name"] == "product" and event["data"]["action"] == "U"
    for message_id, _ in first[:15]:
        consumer.ack(message_id)
        acks[message_id] += 1
    # A restarted app (same consumerID) reclaims what stayed pending past processingTimeout.
    restarted = PubsubRedisConsumer(shop.redis.client(), topic, "inventory",
                                    processing_timeout_ms=300)
    assert restarted.reclaim() == []  # not idle long enough yet
    time.sleep(0.4)
    for message_id, _ in restarted.reclaim():
        restarted.ack(message_id)
        acks[message_id] += 1
    assert restarted.read_new() == []
    assert set(acks) == set(stream_ids) and set(acks.values()) == {1}
    assert shop.redis.client().xpending(topic, "inventory")["pending"] == 0
    # A second subscriber (another consumerID) gets its own full copy.
    other = PubsubRedisConsumer(shop.redis.client(), topic, "search-indexer", 300)
    assert [i for i, _ in other.read_new()] == stream_ids
