#!/usr/bin/env bash
# Prepare this checkout on a fresh Debian machine with Python 3.11. Idempotent and quick when
# everything is already there.
#   scripts/setup.sh            Python environment only (.venv with the package and its tools)
#   scripts/setup.sh --system   also the servers the test suite runs (PostgreSQL, ...)
set -euo pipefail
cd "$(dirname "$0")/.."

SYSTEM_PACKAGES=(postgresql postgresql-client nginx-extras lua-cjson iproute2 docker-compose prometheus redis-server lua-nginx-redis chromium wrk)
PYTHON=${PYTHON:-python3}

sudo_if_needed() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "setup: need root (or sudo) to run: $*" >&2; exit 1; fi
}

apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "setup: installing ${missing[*]}"
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends "${missing[@]}" >/dev/null
}

if [ "${1:-}" = "--system" ]; then
    apt_install "${SYSTEM_PACKAGES[@]}"
    # protobuf-es for the wire-contract tests: the machine's Node.js, else Debian's.
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        apt_install nodejs npm
    fi
    node_stamp=tests/node/node_modules/.crud-setup
    node_want=$(sha256sum tests/node/package-lock.json | cut -d' ' -f1)
    if [ "$(cat "$node_stamp" 2>/dev/null)" != "$node_want" ]; then
        (cd tests/node && npm ci --no-audit --no-fund --loglevel=error)
        echo "$node_want" > "$node_stamp"
    fi
    # The API reference page's assets (Swagger UI, pinned in templates/static/docs), which
    # `make dev` and the tests' gateway serve at <base_path>/docs/assets/ (compose installs
    # the same lock file in its `docs` one-shot). No install scripts run.
    docs_dir=build/docs-page
    docs_want=$(cat templates/static/docs/package.json templates/static/docs/package-lock.json \
        | sha256sum | cut -d' ' -f1)
    if [ "$(cat "$docs_dir/.crud-setup" 2>/dev/null)" != "$docs_want" ]; then
        rm -rf "$docs_dir" && mkdir -p "$docs_dir"
        cp templates/static/docs/package.json templates/static/docs/package-lock.json "$docs_dir/"
        (cd "$docs_dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
        echo "$docs_want" > "$docs_dir/.crud-setup"
    fi
    # The GraphQL API (PostGraphile v5, pinned in templates/static/graphql, the same lock file
    # the generated graphql/ folder carries) and the Node 22 it needs (tests/graphql-node: the
    # npm package node@22, whose install script fetches that exact Node build), for the tests
    # and `make dev`. Debian's Node is older than PostGraphile's minimum.
    node22_stamp=tests/graphql-node/node_modules/.crud-setup
    node22_want=$(sha256sum tests/graphql-node/package-lock.json | cut -d' ' -f1)
    if [ "$(cat "$node22_stamp" 2>/dev/null)" != "$node22_want" ] \
        || ! tests/graphql-node/node_modules/.bin/node --version >/dev/null 2>&1; then
        (cd tests/graphql-node && npm ci --no-audit --no-fund --loglevel=error)
        echo "$node22_want" > "$node22_stamp"
    fi
    graphql_dir=build/graphql-server
    graphql_want=$(cat templates/static/graphql/package.json \
        templates/static/graphql/package-lock.json | sha256sum | cut -d' ' -f1)
    if [ "$(cat "$graphql_dir/.crud-setup" 2>/dev/null)" != "$graphql_want" ]; then
        rm -rf "$graphql_dir" && mkdir -p "$graphql_dir"
        cp templates/static/graphql/package.json templates/static/graphql/package-lock.json \
            "$graphql_dir/"
        (cd "$graphql_dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
        echo "$graphql_want" > "$graphql_dir/.crud-setup"
    fi
fi

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "setup: $PYTHON is older than 3.11" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    if ! "$PYTHON" -m venv .venv 2>/dev/null; then
        rm -rf .venv
        apt_install python3-venv
        "$PYTHON" -m venv .venv
    fi
fi

# Reinstall only when the dependencies changed.
stamp=.venv/.crud-setup
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
    .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"
    echo "$want" > "$stamp"
fi
