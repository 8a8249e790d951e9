"""The memory tool's SQL store keeps the in-process memory's interface and bounds, one namespace per session."""

from __future__ import annotations

import pytest

from agent_runtime.store.memory import SqlMemory
from agent_runtime.store.transcript import upgrade
from agent_runtime.tools import KeyValueMemory
from agent_runtime.tools import memory as bounds
from foundation.sql import make_engine, sessions


@pytest.fixture(params=["sql", "in-process"])
def memory(request, tmp_path):
    if request.param == "in-process":
        return KeyValueMemory()
    url = f"sqlite:///{tmp_path}/agent.db"
    upgrade(url)
    return SqlMemory(sessions(make_engine(url)))


def test_values_by_namespace_with_bounds(memory, monkeypatch):
    assert memory.set("acme/s1", "name", "Ada") == "stored"
    assert memory.set("acme/s1", "name", "Grace") == "stored"
    memory.set("acme/s1", "n_1", "x")
    memory.set("acme/s2", "name", "other session")
    assert memory.get("acme/s1", "name") == "Grace"
    assert memory.keys("acme/s1") == ["n_1", "name"] and memory.keys("acme/s1", "n_") == ["n_1"]
    assert memory.delete("acme/s1", "n_1") == "deleted" and memory.delete("acme/s1", "n_1") == "nothing to delete"
    with pytest.raises(KeyError):
        memory.get("acme/s1", "n_1")
    with pytest.raises(ValueError):
        memory.set("acme/s1", "", "x")
    with pytest.raises(ValueError):
        memory.set("acme/s1", "big", "x" * (bounds.MAX_VALUE + 1))
    monkeypatch.setattr(bounds, "MAX_KEYS", 1)
    if isinstance(memory, SqlMemory):
        monkeypatch.setattr("agent_runtime.store.memory.MAX_KEYS", 1)
    with pytest.raises(ValueError, match="holds 1 keys"):
        memory.set("acme/s1", "another", "x")
