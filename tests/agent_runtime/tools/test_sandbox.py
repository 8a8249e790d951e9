"""Tools in sandbox processes (ToolSandbox): a call past its timeout is stopped by killing its process, the service's
own threads keep running meanwhile, results are cut to the output bound, a tool's prints and failures stay out of
the protocol, and tools that share the service's state (the memory) still run in its process."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time

import pytest

from agent_runtime.tools import KeyValueMemory, ToolCall, ToolRegistry, add_builtins
from agent_runtime.tools.sandbox import ToolSandbox


@pytest.fixture
def sandbox():
    sandbox = ToolSandbox(processes=2, memory_mb=1024, timeout_s=10, max_output_bytes=1000)
    yield sandbox
    sandbox.close()


def call(registry: ToolRegistry, name: str, **arguments):
    return asyncio.run(registry.call(ToolCall("c", name, arguments)))


def test_a_call_past_its_timeout_is_killed_while_the_service_runs_on(sandbox):
    registry = ToolRegistry(sandbox).register_from("sandbox_plugin_tools:register", "acme/s1")
    ticks, stop = [], threading.Event()
    ticker = threading.Thread(target=lambda: [ticks.append(1) for _ in iter(lambda: stop.wait(0.05), True)])
    ticker.start()
    results = asyncio.run(registry.run_calls([ToolCall("a", "stall", {"size": 9999}),
                                              ToolCall("b", "stall", {"size": 9999})]))
    stop.set()
    ticker.join()
    assert [(r.is_error, json.loads(r.content)["error"]) for r in results] == [(True, "timed out after 1 s")] * 2
    assert sandbox.kills == 2 and len(ticks) >= 10  # this process's threads ran while the tools spun
    where = json.loads(call(registry, "where").content)  # a fresh process took the killed ones' place
    assert where == {"pid": where["pid"], "namespace": "acme/s1"} and where["pid"] != os.getpid()


def test_output_is_bounded_and_prints_and_failures_stay_out_of_the_protocol(sandbox):
    registry = ToolRegistry(sandbox).register_from("sandbox_plugin_tools:register", "acme/s1")
    long = call(registry, "chatty", repeat=5000)
    assert long.truncated and long.content.startswith("é" * 500)
    assert long.content.split("\n")[-1] == "[output truncated: 10,000 bytes, the first 1,000 shown]"
    failed = call(registry, "fails", reason="no such city")
    assert failed.is_error and json.loads(failed.content) == {"error": "ValueError: no such city"}
    assert call(registry, "chatty", repeat=3).content == "ééé" and sandbox.kills == 0


def test_builtins_run_in_the_sandbox_and_the_memory_in_the_service(sandbox, tmp_path):
    (tmp_path / "a.txt").write_text("hello")
    memory = KeyValueMemory()
    registry = add_builtins(ToolRegistry(sandbox), "acme/s1", memory, workspace=tmp_path)
    assert {t.name for t in registry.all() if t.origin is not None} == {"calculator", "read_file", "list_files"}
    assert call(registry, "calculator", expression="2 ** 10").content == "1024"
    assert call(registry, "read_file", path="a.txt").content == "hello"
    assert call(registry, "remember", key="k", value="v").content == "stored"
    assert memory.get("acme/s1", "k") == "v"  # written in this process's memory
    started = time.monotonic()
    bomb = call(registry, "calculator", expression="(9**9999)**9999")
    assert bomb.is_error and "too large" in bomb.content and time.monotonic() - started < 5
