"""Dapr components: valid resources, documented metadata keys, and wire compatibility.

Dapr cannot run here. Its resources are validated with the JSON schemas of Dapr's CRDs (in
../shared/reference/dapr), component metadata keys against the components' documented
metadata (dapr/components-contrib, pubsub/redis and state/redis metadata.yaml), their values
and the resulting topic scopes and delivery timing by the decoding rules of daprd 1.14.4
reproduced in dapr_rules.py, and the stream protocol by a consumer that does what
pubsub.redis does, on events the real relay wrote to a real Redis.
"""

from __future__ import annotations

import copy
import json
import math
import queue
import threading
import time
from collections import Counter

import jsonschema
import pytest
import yaml

from protoc_gen_crud.targets import dapr as target

from . import dapr_rules as rules
from .support import EXAMPLES, EXAMPLES_DIR, from_text, from_textproto, model_of, shared_file

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
        if kind == "pubsub.redis":  # scopes are daprd's own keys (pkg/scopes/scopes.go:8-11)
            keys -= rules.PUBSUB_RUNTIME
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


def by_kind(name: str) -> dict[str, dict]:
    out = {}
    for resource in components(name).values():
        key = resource["spec"]["type"] if resource["kind"] == "Component" else resource["kind"]
        out.setdefault(key, resource)
    return out


@pytest.mark.parametrize("name", EXAMPLES)
def test_component_values_decode_as_daprd_1_14_reads_them(name):
    """Every value takes effect as meant: nothing silently ignored, nothing that fails
    Init; one worker (order), durations as pubsub.redis reads them (milliseconds)."""
    resources = by_kind(name)
    pubsub = rules.decode_pubsub_redis(resources["pubsub.redis"], "inventory")
    assert pubsub.ignored == []
    assert pubsub.settings["concurrency"] == 1, "one worker: deliveries in stream order"
    assert pubsub.settings["processingTimeout"] == target.PROCESSING_TIMEOUT_MS * rules.MS
    assert pubsub.settings["redeliverInterval"] == target.REDELIVER_INTERVAL_MS * rules.MS
    assert pubsub.settings["queueDepth"] == target.QUEUE_DEPTH
    assert pubsub.settings["consumerID"] == "inventory"
    assert pubsub.secrets == {"redisPassword", "enableTLS"}
    state = rules.decode_state_redis(resources["state.redis"])
    assert state.ignored == [] and state.settings["keyPrefix"] == "appid"
    ignored: list[str] = []
    rules.delivery(pubsub, resources["Resiliency"], "crud-pubsub", ignored)
    assert ignored == []


def test_the_decoding_check_catches_what_daprd_ignores():
    """The check is not a key-name list: "30s" for redeliverInterval is ignored by
    pubsub.redis (ParseUint only, redis.go:160-167), a misspelt key has no effect, a bad
    number fails Init, and a retry field Dapr 1.14's Resiliency lacks is dropped."""
    pubsub = by_kind("storefront")["pubsub.redis"]

    def decoded(key: str, value: str) -> rules.Decoded:
        changed = copy.deepcopy(pubsub)
        items = [i for i in changed["spec"]["metadata"] if i["name"] != key]
        changed["spec"]["metadata"] = [*items, {"name": key, "value": value}]
        return rules.decode_pubsub_redis(changed, "inventory")

    thirty = decoded("redeliverInterval", "30s")
    assert thirty.settings["redeliverInterval"] == 15 * rules.SECOND
    assert any("redeliverInterval '30s'" in text for text in thirty.ignored)
    assert decoded("redeliverInterval", "30000").settings["redeliverInterval"] == 30 * rules.SECOND
    # processingTimeout also goes through dapr/kit's duration hook: "60s" works there.
    sixty = decoded("processingTimeout", "60s")
    assert sixty.ignored == [] and sixty.settings["processingTimeout"] == 60 * rules.SECOND
    assert decoded("redeliverIntervall", "30000").ignored == [
        "redeliverIntervall: not a pubsub.redis setting"]
    with pytest.raises(rules.DecodeError):
        decoded("concurrency", "-1")
    with pytest.raises(rules.DecodeError):
        decoded("processingTimeout", "60 s")
    ignored: list[str] = []
    rules.decode_retry({"policy": "exponential", "initialInterval": "1s", "maxRetries": 2},
                       ignored)
    assert ignored == ["retry initialInterval: not a field of Dapr 1.14's Retry; dropped"]


@pytest.mark.parametrize("name", EXAMPLES)
def test_change_topics_belong_to_the_relay(name):
    """No Dapr app may publish to a change topic (the relay's ids would be refused after a
    time-based `XADD *` id); the configured subscribers may subscribe to theirs."""
    backend = model_of(name)
    settings = rules.decode_pubsub_redis(by_kind(name)["pubsub.redis"], "any").settings
    topics = {f"crud.{e.name}" for e in backend.streamed}
    subscribers = {(s.app_id, f"crud.{e.name}") for e in backend.streamed
                   for s in e.subscribers}
    apps = {app for app, _ in subscribers} | {"crud", "intruder"}
    for app in apps:
        for topic in topics:
            assert not rules.operation_allowed(topic, settings, app, "publish"), (app, topic)
            assert rules.operation_allowed(topic, settings, app, "subscribe") == (
                (app, topic) in subscribers), (app, topic)
    # An app's own topics on the same component stay open to it.
    assert rules.operation_allowed("orders.custom", settings, "intruder", "publish")


def test_a_subscriber_may_not_publish_even_where_it_subscribes():
    settings = rules.decode_pubsub_redis(by_kind("storefront")["pubsub.redis"], "x").settings
    assert rules.operation_allowed("crud.product", settings, "inventory", "subscribe")
    assert not rules.operation_allowed("crud.product", settings, "inventory", "publish")
    assert not rules.operation_allowed("crud.customer", settings, "inventory", "subscribe")
    open_settings = {k: v for k, v in settings.items() if k != "protectedTopics"}
    assert rules.operation_allowed("crud.customer", open_settings, "crud", "publish"), \
        "without protectedTopics anyone could publish: the check must see the difference"


@pytest.mark.parametrize("name", EXAMPLES)
def test_retries_end_before_a_message_in_flight_is_reclaimed(name):
    """The inbound retries of one delivery, for every message the sidecar holds, end before
    processingTimeout: pubsub.redis never reclaims (and delivers a second time) a message
    whose first delivery is still being retried."""
    resources = by_kind(name)
    pubsub = rules.decode_pubsub_redis(resources["pubsub.redis"], "app")
    timing = rules.delivery(pubsub, resources["Resiliency"], "crud-pubsub", [])
    # 4 attempts of 5 s, waits of at most 0.75 + 1.125 + 1.6875 s (500 ms ±50 %, growing by 1.5).
    assert timing.attempts == 4 and timing.attempt_timeout == 5 * rules.SECOND
    assert sum(timing.waits) == pytest.approx(3.5625 * rules.SECOND, abs=10)
    assert timing.in_flight == 3
    assert timing.last_done < timing.processing_timeout
    print(f"{name}: budget {timing.budget / 1e9:.3f} s, last in flight done after "
          f"{timing.last_done / 1e9:.3f} s, processingTimeout "
          f"{timing.processing_timeout / 1e9:.0f} s")


def test_an_app_on_many_topics_is_not_redelivered_while_retrying():
    """Each subscribed topic has its own poller holding a read batch (redis.go:133-163, 271),
    so an app on K topics holds 2 + K messages: processingTimeout grows with the most topics
    one app subscribes to."""
    entities = "".join(f"""
        entity {{ name: "e{i}" fields {{ name: "x" type: SQL_TYPE_TEXT }}
                 stream {{ subscribers {{ app_id: "busy" route: "/e{i}" }} }} }}"""
                       for i in range(4))
    files = from_text(entities, targets=["dapr"])
    resources = [yaml.safe_load(text) for path, text in files.items() if path.endswith(".yaml")]
    pubsub = next(r for r in resources if r["kind"] == "Component"
                  and r["spec"]["type"] == "pubsub.redis")
    resiliency = next(r for r in resources if r["kind"] == "Resiliency")
    topics = sum(1 for r in resources if r["kind"] == "Subscription" and r["scopes"] == ["busy"])
    assert topics == 4
    timing = rules.delivery(rules.decode_pubsub_redis(pubsub, "busy"), resiliency,
                            "crud-pubsub", [], topics=topics)
    assert timing.in_flight == 6
    assert timing.last_done < timing.processing_timeout
    # The one-topic value would not do: the check sees the difference.
    assert timing.last_done > 90 * rules.SECOND


def test_the_timing_check_fails_the_previous_settings():
    """The values generated before issue 12: exponential retries up to 15 s, 10 of them, no
    per-attempt timeout, 10 workers over a queue of 100, processingTimeout "60s"."""
    old_pubsub = copy.deepcopy(by_kind("storefront")["pubsub.redis"])
    old_pubsub["spec"]["metadata"] = [
        i for i in old_pubsub["spec"]["metadata"]
        if i["name"] not in ("concurrency", "queueDepth", "processingTimeout",
                             "redeliverInterval")] + [
        {"name": "redeliverInterval", "value": "30s"},
        {"name": "processingTimeout", "value": "60s"},
        {"name": "concurrency", "value": "10"}]
    old_resiliency = copy.deepcopy(by_kind("storefront")["Resiliency"])
    old_resiliency["spec"]["policies"]["retries"]["events"] = {
        "policy": "exponential", "maxInterval": "15s", "maxRetries": 10}
    old_resiliency["spec"]["targets"]["components"]["crud-pubsub"]["inbound"] = {
        "retry": "events"}
    pubsub = rules.decode_pubsub_redis(old_pubsub, "app")
    timing = rules.delivery(pubsub, old_resiliency, "crud-pubsub", [])
    assert math.isinf(timing.last_done)
    # Even with every app answering at once, the back-off alone outlasts processingTimeout.
    assert sum(timing.waits) > timing.processing_timeout
    assert timing.redeliver_interval == 15 * rules.SECOND  # "30s" never took effect


class PubsubRedisWorkers:
    """pubsub.redis's delivery loop (components-contrib v1.14.4 pubsub/redis/redis.go): a
    poller reads `XREADGROUP GROUP g g COUNT queueDepth STREAMS topic >` and puts each
    message on a queue of `queueDepth` (263-289, 166-182); `concurrency` workers take from
    it, call the handler and XACK on success (87-96, 218-259)."""

    def __init__(self, client, topic: str, group: str, concurrency: int, queue_depth: int,
                 handler):
        self.client, self.topic, self.group = client, topic, group
        self.queue: queue.Queue = queue.Queue(maxsize=queue_depth)
        self.queue_depth, self.handler = queue_depth, handler
        self.stop = threading.Event()
        try:
            client.xgroup_create(topic, group, id="0", mkstream=True)
        except Exception as exc:  # BUSYGROUP
            assert "BUSYGROUP" in str(exc)
        self.threads = [threading.Thread(target=self.poll, daemon=True)]
        self.threads += [threading.Thread(target=self.work, daemon=True)
                         for _ in range(concurrency)]
        for thread in self.threads:
            thread.start()

    def poll(self) -> None:
        while not self.stop.is_set():
            reply = self.client.xreadgroup(self.group, self.group, {self.topic: ">"},
                                           count=self.queue_depth, block=100)
            for _, entries in reply or []:
                for entry in entries:
                    while not self.stop.is_set():
                        try:
                            self.queue.put(entry, timeout=0.1)
                            break
                        except queue.Full:
                            continue

    def work(self) -> None:
        while not self.stop.is_set():
            try:
                message_id, fields = self.queue.get(timeout=0.1)
            except queue.Empty:
                continue
            self.handler(message_id.decode(), json.loads(fields[b"data"]))
            self.client.xack(self.topic, self.group, message_id)

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(5)


def deliveries(shop, group: str, concurrency: int, queue_depth: int,
               expected: int) -> list[tuple[str, int, str]]:
    """(sku, stock, event id) in the order a subscriber's handler finished them; the
    handler is slower for even stock values, as a real app's time varies."""
    seen: list[tuple[str, int, str]] = []
    lock = threading.Lock()

    def handler(message_id: str, event: dict) -> None:
        data = event["data"]
        time.sleep(0.02 if data["stock"] % 2 == 0 else 0)
        with lock:
            seen.append((data["sku"], data["stock"], message_id))

    workers = PubsubRedisWorkers(shop.redis.client(), "crud.product", group, concurrency,
                                 queue_depth, handler)
    deadline = time.monotonic() + 20
    while len(seen) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    workers.close()
    return seen


def test_per_row_order_holds_with_the_generated_concurrency(shop):
    import psycopg

    with psycopg.connect(shop.pg.dsn(shop.database), autocommit=True) as conn:
        for i in range(1, 31):
            for sku in ("LAP-1", "BK-2"):
                conn.execute("UPDATE shop.product SET stock = %s WHERE sku = %s", (i, sku))
    deadline = time.monotonic() + 10
    while shop.redis.client().xlen("crud.product") < 60 and time.monotonic() < deadline:
        time.sleep(0.05)
    pubsub = rules.decode_pubsub_redis(by_kind("storefront")["pubsub.redis"], "inventory")
    generated = deliveries(shop, "inventory", int(pubsub.settings["concurrency"]),
                           int(pubsub.settings["queueDepth"]), 60)
    assert len(generated) == 60
    for sku in ("LAP-1", "BK-2"):
        stocks = [stock for s, stock, _ in generated if s == sku]
        assert stocks == list(range(1, 31)), sku
    ids = [rules_id(i) for _, _, i in generated]
    assert ids == sorted(ids)
    # pubsub.redis's defaults (10 workers, queue of 100, redis.go:137-141) do not keep it.
    default = deliveries(shop, "with-defaults", rules.PUBSUB_DEFAULTS["concurrency"],
                         rules.PUBSUB_DEFAULTS["queueDepth"], 60)
    assert len(default) == 60
    assert any([stock for s, stock, _ in default if s == sku] != list(range(1, 31))
               for sku in ("LAP-1", "BK-2"))


def rules_id(text: str) -> tuple[int, int]:
    first, _, second = text.partition("-")
    return int(first), int(second)
