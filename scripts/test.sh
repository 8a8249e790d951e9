#!/usr/bin/env bash
# The whole test suite (CPU; Triton kernels run under TRITON_INTERPRET=1), after the import rules: the contracts of
# pyproject.toml's [tool.importlinter] (`lint-imports`) and no import cycles (scripts/check_imports.py). Both run
# first and always; a broken rule fails the run after the tests have run too, so one run reports everything.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
rules=0
.venv/bin/lint-imports --no-cache || rules=$?
.venv/bin/python scripts/check_imports.py || rules=$?
export TRITON_INTERPRET=1 PYTHONHASHSEED=0
tests=0
.venv/bin/python -m pytest -q "$@" || tests=$?
if [ "$tests" -ne 0 ]; then
  exit "$tests"
fi
exit "$rules"
