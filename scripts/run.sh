#!/usr/bin/env bash
# The platform on embedded defaults: the model worker (tiny, random weights), the jobs service with a Celery worker,
# the agent service and the OpenAI-compatible gateway, on SQLite and an on-disk session store under data/; then a
# guided demo of the three user journeys. Ctrl-C stops everything. Extra arguments go to `python -m services.embedded`
# (e.g. --no-demo, --data-dir DIR, --checkpoint DIR --config flash for real weights).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m services.embedded "$@"
