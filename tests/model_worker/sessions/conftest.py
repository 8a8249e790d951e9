"""Fixtures of the session store tests: the small real model (once per module; sessions_testlib.py) and a store
on files in the test's own folder."""

from __future__ import annotations

import pytest
from sessions_testlib import small_model

from model_worker.model import DeepseekV4
from model_worker.sessions import SessionStore, open_blobs


@pytest.fixture(scope="module")
def model() -> DeepseekV4:
    return small_model()


@pytest.fixture
def store(tmp_path, model) -> SessionStore:
    return SessionStore(open_blobs(str(tmp_path / "sessions")), model.fingerprint, model.layout)
