#!/usr/bin/env bash
# Regenerates the Python code of protos/ from the .proto files (committed; tests check it is current).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
out=${1:-.}
"$python" -m grpc_tools.protoc -I . --python_out="$out" --grpc_python_out="$out" --pyi_out="$out" \
  protos/dsv4/worker/v1/worker.proto protos/dsv4/jobs/v1/jobs.proto \
  protos/dsv4/agent/v1/agent.proto
