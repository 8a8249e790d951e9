#!/usr/bin/env bash
# Creates .venv and installs the project for development and the tests: every extra the suite uses (`worker` and
# `kernels`: the engine; `control`: the services; `train`: training's plots; `langchain`: the LangChain chat model;
# `test`); reruns only when pyproject.toml changes. A deployment installs one floor instead: `.[control]` (no torch)
# or `.[worker]` (deploy/Dockerfile.*).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
stamp=".venv/.installed-$(sha1sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[worker,kernels,control,train,langchain,test]'
  touch "$stamp"
fi
