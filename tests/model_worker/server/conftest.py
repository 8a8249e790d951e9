"""Fixtures of the server tests: the `tiny` engine in official numerics (once per module) and a real worker over a
fresh store (server_testlib.py)."""

from __future__ import annotations

import pytest
from server_testlib import Worker

from model_worker.engine.loading import load_model


@pytest.fixture(scope="module")
def model():
    return load_model(None, "tiny", numerics="official")


@pytest.fixture
def worker(model, tmp_path):
    w = Worker(model, tmp_path / "store")
    yield w
    w.stop()
