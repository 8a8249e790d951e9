"""The built-in tools stay in their sandboxes: the calculator evaluates arithmetic only, the memory is bounded and per
session, the file reader never leaves its workspace (`..`, absolute paths, symlinks)."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from agent_runtime.tools import KeyValueMemory, ToolCall, ToolRegistry, add_builtins


def call(registry: ToolRegistry, name: str, **arguments):
    return asyncio.run(registry.call(ToolCall("c", name, arguments)))


@pytest.fixture
def workspace(tmp_path):
    root = tmp_path / "ws"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "a.txt").write_text("hello workspace")
    (tmp_path / "secret.txt").write_text("top secret")
    os.symlink(tmp_path / "secret.txt", root / "link.txt")
    return root


@pytest.mark.parametrize("expression, expected", [("2 * (3 + 4) ** 2", "98"), ("7 // 2 + 7 % 2", "4"),
                                                  ("sqrt(16) + max(1, 2)", "6.0"), ("-pi", repr(-3.141592653589793))])
def test_the_calculator(expression, expected):
    assert call(add_builtins(ToolRegistry(), "s"), "calculator", expression=expression).content == expected


@pytest.mark.parametrize("expression", ["__import__('os').system('id')", "(1).__class__", "2 ** 100000",
                                        "factorial(5000)", "open('x')", "x = 1", "9" * 600])
def test_the_calculator_refuses_everything_else(expression):
    result = call(add_builtins(ToolRegistry(), "s"), "calculator", expression=expression)
    assert result.is_error


def test_memory_is_per_session_and_bounded():
    memory = KeyValueMemory()
    alice, bob = add_builtins(ToolRegistry(), "alice", memory), add_builtins(ToolRegistry(), "bob", memory)
    assert call(alice, "remember", key="plan", value="step 1").content == "stored"
    assert call(alice, "recall", key="plan").content == "step 1"
    assert call(bob, "recall", key="plan").is_error  # another session's memory
    assert json.loads(call(alice, "memory_keys").content) == ["plan"]
    assert call(alice, "forget", key="plan").content == "deleted"
    assert call(alice, "remember", key="big", value="x" * (17 << 10)).is_error


def test_files_stay_in_the_workspace(workspace):
    tools = add_builtins(ToolRegistry(), "s", workspace=workspace)
    assert call(tools, "read_file", path="docs/a.txt").content == "hello workspace"
    assert call(tools, "read_file", path="docs/a.txt", offset=6, limit=3).content == "wor"
    assert json.loads(call(tools, "list_files").content) == ["docs/"]  # a link out of it is not even listed
    for escape in ("../secret.txt", str(workspace.parent / "secret.txt"), "link.txt", "docs/../../secret.txt"):
        result = call(tools, "read_file", path=escape)
        assert result.is_error and "outside the workspace" in json.loads(result.content)["error"], escape
    assert call(tools, "list_files", path="..").is_error
