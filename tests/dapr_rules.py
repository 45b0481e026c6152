"""What daprd 1.14.4 makes of the generated Dapr resources, reproduced from its sources.

Dapr cannot run here, and a key or value it does not understand is mostly ignored without a
word, so checking key names is not enough. This module reproduces, as facts read from the
pinned sources (no code copied), how the values are decoded and what timing follows:

- dapr/kit 3823663aa4bb (the version dapr v1.14.4's go.mod pins), config/decode.go:61-184:
  component metadata strings decoded per Go field type — time.Duration: an integer (Atoi) is
  milliseconds, else time.ParseDuration (101-112); uint: ParseUint base 10 (125-128); int,
  int64: ParseInt base 10 (146-153); bool: ParseBool (176-179); a StringDecoder type uses its
  own DecodeString (81-99). A failure fails the decode.
- components-contrib v1.14.4 common/component/redis/settings.go:25-108 (the fields and their
  types; `redeliverInterval` is tagged `mapstructure:"-"`, line 94, so Decode skips it) and
  130-153 (redis Duration: an integer is milliseconds, a negative one raw, else
  ParseDuration).
- components-contrib v1.14.4 common/component/redis/redis.go:137-141 (pubsub defaults:
  processingTimeout 60 s, redeliverInterval 15 s, queueDepth 100, concurrency 10), 144-147
  (a decode error fails Init), 151-158 (processingTimeout: a ParseUint integer is
  milliseconds, otherwise the decoded duration stands), 160-167 (redeliverInterval: only a
  ParseUint integer, as milliseconds; anything else silently leaves the default).
- dapr v1.14.4 pkg/runtime/meta/meta.go:92 (`{appID}` replaced by the app id),
  pkg/runtime/processor/pubsub/pubsub.go:79-83 (empty consumerID: the app id) and 94-97 (the
  scope keys), pkg/scopes/scopes.go:17-93 (scope parsing: key names case-insensitive, spaces
  removed, `app=t1,t2;app2=…`, topics `,`-separated), pkg/runtime/pubsub/adapter.go:46-87
  (IsOperationAllowed: allowedTopics first, then a protected topic, or any topic once the app
  has scopes, needs the app's scope to list it), used for publishing at
  pkg/runtime/pubsub/publisher/publisher.go:61,84 and subscribing at
  pkg/runtime/subscription/subscription.go:72.
- dapr v1.14.4 pkg/apis/resiliency/v1alpha1/types.go:47-58 (a retry has only policy,
  duration, maxInterval, maxRetries; other keys are dropped), pkg/resiliency/resiliency.go:
  394-397 with 989-994 (timeouts: an integer is milliseconds, else ParseDuration), 400-407
  (retries decoded over dapr/kit's DefaultConfig), 822-836 (a component's inbound policy);
  pkg/resiliency/policy.go:115-164 (the timeout bounds each attempt) and 208-234 (retries
  around it); pkg/runtime/subscription/subscription.go:222 (the retry runner runs on
  context.Background(): pubsub.redis's processingTimeout context does not stop it).
- dapr/kit 3823663aa4bb retry/retry.go:66-77 (DefaultConfig: constant 5 s, initial interval
  500 ms, randomization 0.5, multiplier 1.5, max interval 60 s, max elapsed 15 min,
  maxRetries -1 = unlimited), 117-137 (exponential back-off; WithMaxRetries when
  maxRetries >= 0), 194-204 (policy names).
- cenkalti/backoff v4.2.1 (kit's go.mod) exponential.go:116-125 and 137-161 (each wait is the
  current interval ±50 % — at most interval x 1.5 + 1 ns — then the interval grows by the
  multiplier up to maxInterval; past maxElapsedTime it stops) and tries.go:22-33 (maxRetries
  waits, so maxRetries + 1 attempts).
- components-contrib v1.14.4 pubsub/redis/redis.go:87-96 (`concurrency` workers share one
  queue of `queueDepth`), 263-289 (XREADGROUP COUNT queueDepth, enqueued one by one),
  237-259 (a failed handler leaves the message pending; the worker moves on),
  293-381 (every redeliverInterval, entries idle for processingTimeout are claimed and
  queued again; idle time counts from delivery, so it includes time spent in the queue).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

UINT64_MAX = 2**64 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MS = 1_000_000  # nanoseconds
SECOND = 1000 * MS

# settings.go:25-108 — metadata key -> Go type of the Settings field.
REDIS_SETTINGS = {
    "redisHost": "string", "redisPassword": "string", "redisUsername": "string",
    "redisDB": "int", "redisType": "string", "redisMaxRetries": "int",
    "redisMinRetryInterval": "redis.Duration", "redisMaxRetryInterval": "redis.Duration",
    "dialTimeout": "redis.Duration", "readTimeout": "redis.Duration",
    "writeTimeout": "redis.Duration", "poolSize": "int", "minIdleConns": "int",
    "maxConnAge": "redis.Duration", "poolTimeout": "redis.Duration",
    "idleTimeout": "redis.Duration", "idleCheckFrequency": "redis.Duration",
    "sentinelMasterName": "string", "failover": "bool", "enableTLS": "bool",
    "clientCert": "string", "clientKey": "string", "ttlInSeconds": "*int",
    "queryIndexes": "string", "consumerID": "string",
    "processingTimeout": "time.Duration", "queueDepth": "uint", "concurrency": "uint",
    "maxLenApprox": "int64", "useEntraID": "bool", "useAzureAD": "bool",
}
# Read by pubsub.redis outside Settings.Decode (redis.go:160-167; settings.go:94).
PUBSUB_EXTRA = {"redeliverInterval"}
# Read by daprd itself from a pub/sub component's metadata (scopes.go:8-11).
PUBSUB_RUNTIME = {"subscriptionScopes", "publishingScopes", "allowedTopics", "protectedTopics"}
# Read by daprd for every state store (pkg/components/state/state_config.go:26,47-54), and
# state.redis's actor flag.
STATE_RUNTIME = {"keyPrefix", "actorStateStore"}
PUBSUB_DEFAULTS = {"processingTimeout": 60 * SECOND, "redeliverInterval": 15 * SECOND,
                   "queueDepth": 100, "concurrency": 10}


class DecodeError(ValueError):
    """The value fails decoding: daprd does not load the component."""


# ------------------------------------------------------------------- Go's parsers
def parse_uint(text: str) -> int:
    """strconv.ParseUint(text, 10, 64): ASCII digits only (no sign, no underscores)."""
    if not text or not text.isascii() or not text.isdigit() or int(text) > UINT64_MAX:
        raise ValueError(f"ParseUint: invalid syntax {text!r}")
    return int(text)


def parse_int(text: str) -> int:
    """strconv.ParseInt(text, 10, 64) (and Atoi on 64-bit): an optional sign, then digits."""
    digits = text[1:] if text[:1] in ("+", "-") else text
    if not digits or not digits.isascii() or not digits.isdigit():
        raise ValueError(f"ParseInt: invalid syntax {text!r}")
    value = int(text)
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(f"ParseInt: out of range {text!r}")
    return value


def parse_bool(text: str) -> bool:
    """strconv.ParseBool."""
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(f"ParseBool: invalid syntax {text!r}")


UNITS = {"ns": 1, "us": 1000, "µs": 1000, "μs": 1000, "ms": MS, "s": SECOND,
         "m": 60 * SECOND, "h": 3600 * SECOND}
_PART = re.compile(r"(\d*)(?:\.(\d*))?([^\d.]+)")


def parse_duration(text: str) -> int:
    """time.ParseDuration in nanoseconds: [sign] then number+unit pairs, or "0"."""
    sign, rest = (-1, text[1:]) if text[:1] == "-" else (1, text[1:] if text[:1] == "+" else text)
    if rest == "0":
        return 0
    if not rest:
        raise ValueError(f"time: invalid duration {text!r}")
    total, pos = 0, 0
    while pos < len(rest):
        match = _PART.match(rest, pos)
        if not match or not (match.group(1) or match.group(2)) or match.group(3) not in UNITS:
            raise ValueError(f"time: invalid duration {text!r}")
        whole, frac, unit = match.group(1) or "0", match.group(2) or "", match.group(3)
        total += int(whole) * UNITS[unit]
        if frac:
            total += int(frac) * UNITS[unit] // 10 ** len(frac)
        pos = match.end()
    return sign * total


# ------------------------------------------------------------------ decoding rules
def kit_decode(kind: str, text: str) -> object:
    """dapr/kit config.Decode's string hook for one field (decode.go:61-184)."""
    try:
        if kind == "string":
            return text
        if kind == "time.Duration":
            try:
                return parse_int(text) * MS
            except ValueError:
                return parse_duration(text)
        if kind == "redis.Duration":  # settings.go:132-153
            try:
                value = parse_int(text)
            except ValueError:
                return parse_duration(text)
            return value if value < 0 else value * MS
        if kind == "uint":
            return parse_uint(text)
        if kind in ("int", "int64", "*int"):
            return parse_int(text)
        if kind == "bool":
            return parse_bool(text)
    except ValueError as exc:
        raise DecodeError(f"invalid {kind} {text!r}: {exc}") from exc
    raise AssertionError(kind)


@dataclass
class Decoded:
    """A component as daprd would hold it: effective settings, and what it silently drops."""

    settings: dict[str, object] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)  # keys or values without any effect
    secrets: set[str] = field(default_factory=set)  # keys whose value comes from a store


def _values(component: dict) -> tuple[dict[str, str], set[str]]:
    values, secrets = {}, set()
    for item in component["spec"]["metadata"]:
        if "secretKeyRef" in item:
            secrets.add(item["name"])
        else:
            values[item["name"]] = str(item["value"])
    return values, secrets


def decode_pubsub_redis(component: dict, app_id: str) -> Decoded:
    """pubsub.redis Init as daprd 1.14.4 runs it (redis.go:106-168 and the runtime keys)."""
    values, secrets = _values(component)
    values = {k: v.replace("{appID}", app_id) for k, v in values.items()}  # meta.go:92
    out = Decoded(dict(PUBSUB_DEFAULTS), secrets=secrets)
    lower = {k.lower(): k for k in REDIS_SETTINGS}  # mapstructure matches names ignoring case
    for key, text in values.items():
        if key in PUBSUB_RUNTIME or key in PUBSUB_EXTRA:
            continue
        if key.lower() not in lower:
            out.ignored.append(f"{key}: not a pubsub.redis setting")
            continue
        name = lower[key.lower()]
        out.settings[name] = kit_decode(REDIS_SETTINGS[name], text)
    for key in secrets:
        if key.lower() not in lower and key not in PUBSUB_RUNTIME | PUBSUB_EXTRA:
            out.ignored.append(f"{key}: not a pubsub.redis setting")
    for key in ("processingTimeout", "redeliverInterval"):  # redis.go:151-167
        text = values.get(key, "")
        if not text:
            continue
        try:
            out.settings[key] = parse_uint(text) * MS
        except ValueError:
            if key == "redeliverInterval":
                out.ignored.append(f"redeliverInterval {text!r}: not an unsigned integer of "
                                   "milliseconds; the 15 s default stays")
    if not out.settings.get("consumerID"):  # processor/pubsub/pubsub.go:79-83
        out.settings["consumerID"] = app_id
    out.settings.update({k: values[k] for k in PUBSUB_RUNTIME if k in values})
    return out


def decode_state_redis(component: dict) -> Decoded:
    """state.redis Settings.Decode (redis.go:116-147) plus daprd's keyPrefix."""
    values, secrets = _values(component)
    out = Decoded(secrets=secrets)
    lower = {k.lower(): k for k in REDIS_SETTINGS}
    for key, text in values.items():
        if key in STATE_RUNTIME:
            out.settings[key] = text
        elif key.lower() in lower:
            name = lower[key.lower()]
            out.settings[name] = kit_decode(REDIS_SETTINGS[name], text)
        else:
            out.ignored.append(f"{key}: not a state.redis setting")
    return out


# ---------------------------------------------------------------------- topic scopes
def scoped_topics(scope: str, app_id: str, settings: dict[str, object]) -> list[str]:
    """scopes.go:33-63 GetScopedTopics."""
    value = next((str(v) for k, v in settings.items() if k.lower() == scope.lower()), "")
    topics: list[str] = []
    for app in value.replace(" ", "").split(";"):
        parts = app.split("=")
        if len(parts) < 2 or parts[0] != app_id:
            continue
        topics += [t for t in parts[1].split(",") if t not in topics]
    return topics


def param_topics(name: str, settings: dict[str, object]) -> list[str]:
    """scopes.go:65-93 (allowedTopics, protectedTopics)."""
    value = next((str(v) for k, v in settings.items() if k.lower() == name.lower()), "")
    return list(dict.fromkeys(value.replace(" ", "").split(","))) if value else []


def operation_allowed(topic: str, settings: dict[str, object], app_id: str,
                      operation: str) -> bool:
    """adapter.go:46-87 for publishing ("publish") or subscribing ("subscribe")."""
    allowed = param_topics("allowedTopics", settings)
    if allowed and topic not in allowed:
        return False
    scope = "publishingScopes" if operation == "publish" else "subscriptionScopes"
    scoped = scoped_topics(scope, app_id, settings)
    protected = topic in param_topics("protectedTopics", settings)
    if not protected and not scoped:
        return True
    return topic in scoped


# ---------------------------------------------------------------------------- timing
def resiliency_duration(text: str) -> int:
    """resiliency.go:989-994 parseDuration (timeouts), nanoseconds."""
    try:
        return parse_int(text) * MS
    except ValueError:
        return parse_duration(text)


RETRY_FIELDS = {"policy", "duration", "maxInterval", "maxRetries"}  # types.go:53-58


@dataclass(frozen=True)
class Retry:
    """A decoded retry policy over kit's DefaultConfig (retry.go:66-77)."""

    policy: str = "constant"
    duration: int = 5 * SECOND
    initial_interval: int = 500 * MS
    randomization: float = 0.5
    multiplier: float = 1.5
    max_interval: int = 60 * SECOND
    max_elapsed: int = 15 * 60 * SECOND
    max_retries: int = -1

    def waits(self) -> list[int]:
        """The longest possible wait before each retry, nanoseconds (unbounded: error)."""
        if self.max_retries < 0:
            raise DecodeError("maxRetries unset: retries never end")
        if self.policy == "constant":
            return [self.duration] * self.max_retries
        waits, current, elapsed = [], self.initial_interval, 0
        for _ in range(self.max_retries):
            longest = math.floor(current * (1 + self.randomization)) + 1
            if self.max_elapsed and elapsed + longest > self.max_elapsed:
                break
            waits.append(longest)
            elapsed += longest
            current = (self.max_interval if current >= self.max_interval / self.multiplier
                       else int(current * self.multiplier))
        return waits


def decode_retry(spec: dict, ignored: list[str]) -> Retry:
    values = {}
    for key, value in spec.items():
        if key not in RETRY_FIELDS:
            ignored.append(f"retry {key}: not a field of Dapr 1.14's Retry; dropped")
            continue
        values[key] = value
    policy = str(values.get("policy", "constant")).lower()
    if policy not in ("constant", "exponential"):
        raise DecodeError(f"unexpected back off policy type: {values['policy']}")
    retry = Retry(policy=policy)
    if "duration" in values:
        retry = _replace(retry, duration=kit_decode("time.Duration", str(values["duration"])))
    if "maxInterval" in values:
        retry = _replace(retry, max_interval=kit_decode("time.Duration",
                                                        str(values["maxInterval"])))
    if "maxRetries" in values:
        retry = _replace(retry, max_retries=int(values["maxRetries"]))
    return retry


def _replace(retry: Retry, **changes) -> Retry:
    from dataclasses import replace

    return replace(retry, **changes)


@dataclass(frozen=True)
class Delivery:
    """The worst case of delivering one message to a subscriber, and of the queue."""

    attempt_timeout: int | None  # ns, None: unbounded
    attempts: int
    waits: tuple[int, ...]
    concurrency: int
    queue_depth: int
    processing_timeout: int
    redeliver_interval: int
    topics: int = 1  # topics the app subscribes to: one poller each

    @property
    def budget(self) -> float:
        """Longest time one delivery with all its retries can take (ns)."""
        if self.attempt_timeout is None:
            return math.inf
        return self.attempts * self.attempt_timeout + sum(self.waits)

    @property
    def in_flight(self) -> int:
        """Messages read from Redis and not yet done: the workers' plus a full queue plus,
        per subscribed topic, its poller's read batch waiting to be queued (redis.go:87,
        89-96, 133-163 one poller per Subscribe, 271, 285-287)."""
        return self.concurrency + self.queue_depth + self.topics * self.queue_depth

    @property
    def last_done(self) -> float:
        """When the last message in flight is done, counted from its delivery (ns): its
        idle time when it is acknowledged."""
        return math.ceil(self.in_flight / self.concurrency) * self.budget


def delivery(pubsub: Decoded, resiliency: dict, pubsub_name: str,
             ignored: list[str], topics: int = 1) -> Delivery:
    """The inbound policy of the pub/sub component (resiliency.go:822-836)."""
    policies = resiliency["spec"]["policies"]
    names = resiliency["spec"]["targets"]["components"].get(pubsub_name, {}).get("inbound", {})
    timeout = (resiliency_duration(policies["timeouts"][names["timeout"]])
               if names.get("timeout") else None)
    retry = decode_retry(policies["retries"][names["retry"]], ignored) if names.get(
        "retry") else Retry(max_retries=0)
    waits = retry.waits()
    return Delivery(timeout, len(waits) + 1, tuple(waits), int(pubsub.settings["concurrency"]),
                    int(pubsub.settings["queueDepth"]),
                    int(pubsub.settings["processingTimeout"]),
                    int(pubsub.settings["redeliverInterval"]), topics)
