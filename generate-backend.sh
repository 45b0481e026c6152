#!/usr/bin/env bash
# The seed's front door: ./generate-backend.sh configs/product.textproto [-o generated]
# Sets up the Python environment on first use, then writes the backend to generated/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
"$here/scripts/setup.sh"
exec "$here/.venv/bin/crud-gen" "$@"
