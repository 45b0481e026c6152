"""Relay target: `relay/relay.json`, the change-capture relay's configuration.

Which tables are streamed, to which Redis stream (the Dapr topic), how long each stream may
grow, and the names of the replication slot and publication the migrations create.
"""

from __future__ import annotations

import json
from pathlib import Path

from .. import relay as relay_package
from ..model import Backend
from ..rendering import HEADER

SLOT = "crud_relay"
# Redis runs with `appendfsync everysec`: an acknowledged write may be lost for up to about
# two seconds after a crash, so positions are confirmed to PostgreSQL only after this long.
CONFIRM_AFTER_SECONDS = 5
PUBSUB = "crud-pubsub"
METRICS_PORT = 9464
RELAY_ROLE = "crud_relay"


# The key beside each stream where crud-relay records the newest entry id it trimmed away:
# the gateway compares a resuming SSE client's Last-Event-ID with it to announce a gap.
TRIMMED_SUFFIX = ".trimmed"
# How often the relay trims each stream (and measures its consumer groups' lag).
TRIM_INTERVAL_SECONDS = 1.0
# While it streams, the relay sets this Redis key at each trim round (every
# TRIM_INTERVAL_SECONDS) with this expiry; the gateway's /health reports the relay down when
# the key is gone (the relay crashed, hangs, or lost PostgreSQL or Redis).
ALIVE_KEY = "crud-relay:alive"
ALIVE_SECONDS = 5


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
        "trim_interval_seconds": TRIM_INTERVAL_SECONDS,
        "alive_key": ALIVE_KEY,
        "alive_seconds": ALIVE_SECONDS,
        "tables": [
            {"schema": backend.database.schema, "table": e.name, "entity": e.name,
             "topic": topic(e.name), "max_len": e.stream_max_len,
             "retention_max_len": e.stream_retention_max_len,
             "trimmed_key": topic(e.name) + TRIMMED_SUFFIX,
             # Columns whose JSON is the wire domains' (pgoutput names only their oid).
             "wire": {c.name: c.wire + ("[]" if c.sql_type.endswith("]") else "")
                      for c in e.columns if c.domain},
             # The CloudEvent `tenant` attribute's column (tenant-scoped entities only).
             **({"tenant": e.access.tenant_column} if e.access.tenant_column else {})}
            for e in backend.streamed
        ],
    }


# The relay's dependencies, pinned for its image (the versions the test suite runs).
REQUIREMENTS = ("psycopg2-binary==2.9.13", "redis==8.1.0", "hiredis==3.5.0", "orjson==3.13.0")
BASE_IMAGE = "python:3.11.11-slim-bookworm"


def dockerfile() -> str:
    return "\n".join([
        HEADER.rstrip("\n"),
        "# The change-capture relay: crud_relay/ is protoc-gen-crud's relay, copied here so the",
        "# generated folder builds on its own.",
        f"FROM {BASE_IMAGE}",
        "RUN useradd --system --uid 10001 relay",
        "COPY requirements.txt /opt/crud/requirements.txt",
        "RUN pip install --no-cache-dir -r /opt/crud/requirements.txt",
        "COPY crud_relay /opt/crud/crud_relay",
        "WORKDIR /opt/crud",
        "USER relay",
        'ENTRYPOINT ["python", "-m", "crud_relay.cli"]',
        'CMD ["--config", "/etc/crud/relay.json"]',
    ]) + "\n"


def relay_sources() -> dict[str, str]:
    """The relay package's own modules, for the image."""
    folder = Path(relay_package.__file__).resolve().parent
    return {f"relay/crud_relay/{p.name}": p.read_text()
            for p in sorted(folder.glob("*.py"))}


def render(backend: Backend) -> dict[str, str]:
    files = {"relay/relay.json": json.dumps(config(backend), indent=2) + "\n",
             "relay/Dockerfile": dockerfile(),
             "relay/requirements.txt": "\n".join(REQUIREMENTS) + "\n"}
    files.update(relay_sources())
    return files
