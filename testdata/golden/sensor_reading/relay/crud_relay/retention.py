"""Retention of the change streams: trim behind the slowest Dapr consumer group, within a cap.

Why the relay trims instead of `XADD … MAXLEN ~ n`: MAXLEN removes entries whether or not a
consumer group has read them, and Dapr's pubsub.redis then acknowledges the vanished pending
entries away (components-contrib v1.14.4, pubsub/redis/redis.go:364-378 and 401-406): changes
lost without a trace. Here a stream keeps its newest `max_len` entries and, further back,
everything a consumer group has not yet read and acknowledged — up to `retention_max_len`
entries. What the cap removes from under a group is counted per group (and alerts); the
newest removed id is recorded beside the stream so the gateway can tell an SSE client that
resumes from a removed id that it missed changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

Id = tuple[int, int]

# The id of the n-th entry from the start; computed inside Redis, so no entry travels.
NTH_ID = """
local entries = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', ARGV[1])
if #entries < tonumber(ARGV[1]) then return false end
return entries[#entries][1]
"""
# How many entries lie between two XRANGE bounds (which may be exclusive: "(<id>").
COUNT_RANGE = """
return #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[2])
"""


def parse_id(text: str | bytes) -> Id:
    """A stream id as a comparable pair (Redis compares ids as two unsigned integers)."""
    if isinstance(text, bytes):
        text = text.decode()
    first, _, second = text.partition("-")
    return int(first), int(second or 0)


def format_id(value: Id) -> str:
    return f"{value[0]}-{value[1]}"


@dataclass(frozen=True)
class Group:
    """One consumer group of a stream (for Dapr: one consumerID, i.e. one app)."""

    name: str
    lag: int  # entries not yet delivered to the group
    pending: int  # delivered but not acknowledged
    floor: Id  # the oldest entry the group may still need
    needed: int = 0  # entries from the floor to the end of the stream
    last_delivered: Id = (0, 0)


@dataclass(frozen=True)
class Trim:
    """What one trimming round found and did."""

    groups: tuple[Group, ...]
    trimmed_through: Id | None  # newest id removed, if any was
    lost: dict[str, int]  # per group: entries removed before it had read and acked them


def _count(client: redis.Redis, topic: str, start: str, end: str) -> int:
    return int(client.eval(COUNT_RANGE, 1, topic, start, end))


def _unread_before(client: redis.Redis, topic: str, group: Group, target: Id) -> int:
    """What trimming below `target` takes from a group: its pending entries there (delivered,
    never acknowledged) and the entries it was never given; not those it acknowledged."""
    pending = client.xpending_range(topic, group.name, min="-", max="(" + format_id(target),
                                    count=max(group.pending, 1)) if group.pending else []
    undelivered = (_count(client, topic, "(" + format_id(group.last_delivered),
                          "(" + format_id(target))
                   if group.last_delivered < target else 0)
    return len(pending) + undelivered


def groups(client: redis.Redis, topic: str) -> tuple[Group, ...]:
    """The stream's consumer groups with the oldest entry each still needs: its oldest
    pending entry (delivered, not acknowledged: Dapr redelivers it), else the one after its
    last-delivered id."""
    found = []
    length = client.xlen(topic)
    for info in client.xinfo_groups(topic):
        name = info["name"].decode() if isinstance(info["name"], bytes) else info["name"]
        last = parse_id(info["last-delivered-id"])
        floor = (last[0], last[1] + 1)
        pending = int(info["pending"])
        if pending:
            oldest = client.xpending(topic, name)["min"]
            floor = min(floor, parse_id(oldest))
        lag = info.get("lag")
        if lag is None:  # Redis cannot tell after some deletions: count what follows
            lag = _count(client, topic, "(" + format_id(last), "+")
        # Redis counts entries trimmed before the group read them as lag too; those will
        # never be delivered (they are counted as lost instead), so at most what is there.
        lag = min(int(lag), length)
        # What the group still needs: the undelivered (Redis keeps that count, so this is
        # cheap however long the stream) plus the delivered entries from its oldest pending
        # one on, usually a few.
        needed = lag + (_count(client, topic, format_id(floor), format_id(last))
                        if pending else 0)
        found.append(Group(name, lag, pending, floor, min(needed, length), last))
    return tuple(sorted(found, key=lambda g: g.name))


def trim(client: redis.Redis, topic: str, trimmed_key: str, max_len: int,
         retention_max_len: int) -> Trim:
    """Trim `topic` to its newest `max_len` entries, but not past any consumer group's
    floor unless the stream would then hold more than `retention_max_len` entries."""
    if not client.exists(topic):
        return Trim((), None, {})
    found = groups(client, topic)
    length = client.xlen(topic)
    if length <= max_len:
        return Trim(found, None, {})
    if found:
        # Only the entries before the slowest group's floor may go (by size). When the group
        # still needs max_len entries or more, its floor is the limit: no walk at all. Else
        # the size limit is found by position, walking only the entries beyond max_len
        # (those written since the last round). Counting the entries before the floor
        # instead walked the whole stream every round once the group had caught up.
        slowest = min(found, key=lambda g: g.floor)
        target = slowest.floor if slowest.needed >= max_len else min(slowest.floor, parse_id(
            client.eval(NTH_ID, 1, topic, length - max_len + 1)))
    else:
        target = parse_id(client.eval(NTH_ID, 1, topic, length - max_len + 1))
    if length > retention_max_len:
        target = max(target, parse_id(client.eval(NTH_ID, 1, topic,
                                                  length - retention_max_len + 1)))
    below = client.xrevrange(topic, "(" + format_id(target), "-", count=1)
    if not below:
        return Trim(found, None, {})
    lost = {g.name: _unread_before(client, topic, g, target) for g in found if g.floor < target}
    trimmed_through = parse_id(below[0][0])
    # The marker and the trim in one transaction: a reader never sees entries gone while
    # the marker still says they are there.
    with client.pipeline(transaction=True) as tx:
        tx.set(trimmed_key, format_id(trimmed_through))
        tx.xtrim(topic, minid=format_id(target), approximate=False)
        tx.execute()
    return Trim(groups(client, topic), trimmed_through,
                {name: n for name, n in lost.items() if n})
