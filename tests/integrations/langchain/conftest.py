"""One real model worker process (`tiny`, random weights) for every LangChain test, and pytest-asyncio's mark on
their coroutine tests (LangChain's standard tests are `async def` without it; the suite runs pytest-asyncio in
strict mode)."""

from __future__ import annotations

import inspect
import sys

import pytest
from realparts import Process, child_env


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector, name, obj):
    # Collection hooks of a folder's conftest apply to that folder only.
    if inspect.iscoroutinefunction(obj):
        pytest.mark.asyncio(obj)


@pytest.fixture(scope="package")
def worker_target(tmp_path_factory) -> str:
    """HOST:PORT of `python -m model_worker serve --config tiny`, sessions stored under a temporary directory."""
    root = tmp_path_factory.mktemp("langchain-worker")
    worker = Process([sys.executable, "-m", "model_worker", "serve", "--config", "tiny", "--port", "0",
                      "--session-store", str(root / "sessions")], child_env(), root / "worker.log")
    try:
        port = worker.wait_for(r"serving \S+ on 127\.0\.0\.1:(\d+)").group(1)
        yield f"127.0.0.1:{port}"
    finally:
        worker.stop()
