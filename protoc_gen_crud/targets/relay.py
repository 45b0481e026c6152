"""Relay target: `relay/relay.json`, the change-capture relay's configuration.

Which tables are streamed, to which Redis stream (the Dapr topic), how long each stream may
grow, and the names of the replication slot and publication the migrations create.
"""

from __future__ import annotations

import json

from ..model import Backend

SLOT = "crud_relay"
# Redis runs with `appendfsync everysec`: an acknowledged write may be lost for up to about
# two seconds after a crash, so positions are confirmed to PostgreSQL only after this long.
CONFIRM_AFTER_SECONDS = 5
PUBSUB = "crud-pubsub"
METRICS_PORT = 9464
RELAY_ROLE = "crud_relay"


def topic(entity: str) -> str:
    """The Redis stream (and Dapr topic) of an entity's changes."""
    return f"crud.{entity}"


def config(backend: Backend) -> dict:
    return {
        "slot": SLOT,
        "publication": backend.database.publication,
        "pubsub": PUBSUB,
        "source": f"/crud/{backend.database.name}",
        "metrics_port": METRICS_PORT,
        "confirm_after_seconds": CONFIRM_AFTER_SECONDS,
        "tables": [
            {"schema": backend.database.schema, "table": e.name, "entity": e.name,
             "topic": topic(e.name), "max_len": e.stream_max_len}
            for e in backend.streamed
        ],
    }


def render(backend: Backend) -> dict[str, str]:
    return {"relay/relay.json": json.dumps(config(backend), indent=2) + "\n"}
