"""`crud-relay`: run the change-capture relay.

    crud-relay --config generated/relay/relay.json

Connection strings come from the environment: CRUD_RELAY_DATABASE_URL (a role with the
REPLICATION attribute, e.g. crud_relay) and CRUD_RELAY_REDIS_URL (redis://:password@redis:6379).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="crud-relay", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="relay/relay.json", help="relay.json")
    args = parser.parse_args(argv)
    try:
        from .service import Config
        from .service import main as run
    except ImportError as exc:  # pragma: no cover - depends on the install
        print(f"crud-relay: {exc}; install protoc-gen-crud[relay]", file=sys.stderr)
        return 2
    missing = [v for v in ("CRUD_RELAY_DATABASE_URL", "CRUD_RELAY_REDIS_URL")
               if not os.environ.get(v)]
    if missing:
        print(f"crud-relay: set {' and '.join(missing)}", file=sys.stderr)
        return 2
    config = Config.load(Path(args.config), os.environ["CRUD_RELAY_DATABASE_URL"],
                         os.environ["CRUD_RELAY_REDIS_URL"])
    return run(config)


if __name__ == "__main__":
    raise SystemExit(main())
