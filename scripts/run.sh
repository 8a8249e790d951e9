#!/usr/bin/env bash
# The platform on embedded defaults: chat with the tiny DeepSeek-V4 model (random weights) in the terminal.
# Extra arguments go to `python -m model_worker chat` (e.g. --checkpoint DIR for real weights, --mode think-high).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m model_worker chat "$@"
