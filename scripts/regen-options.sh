#!/usr/bin/env bash
# Regenerate the Python gencode of proto/crud/v1/options.proto (committed; a test checks it).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m grpc_tools.protoc -Iproto --python_out=protoc_gen_crud/gen proto/crud/v1/options.proto
