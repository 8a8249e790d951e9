#!/usr/bin/env bash
# The whole test suite (CPU; Triton kernels run under TRITON_INTERPRET=1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TRITON_INTERPRET=1 PYTHONHASHSEED=0
exec .venv/bin/python -m pytest -q "$@"
