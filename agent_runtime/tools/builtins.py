"""The built-in tools: a calculator, a key-value memory (per agent session) and a file reader confined to a workspace
directory. None reaches outside its sandbox. The calculator and the file reader need nothing of the service's, so
they are registered by entry (`register_from`) and run in the registry's sandbox processes when it has them; the
memory tools write through the service's own store and run in its process (agent_runtime/tools/sandbox.py)."""

from __future__ import annotations

from pathlib import Path

from agent_runtime.tools.calculator import calculate
from agent_runtime.tools.files import Workspace
from agent_runtime.tools.memory import Memory
from agent_runtime.tools.registry import Tool, ToolRegistry, schema_from_signature


def add_builtins(registry: ToolRegistry, namespace: str, memory: Memory | None = None,
                 workspace: str | Path | None = None) -> ToolRegistry:
    """Register the built-ins for one agent session (`namespace` keys its memory)."""
    registry.register_from("agent_runtime.tools.builtins:add_calculator")
    if memory is not None:
        add_memory(registry, namespace, memory)
    if workspace is not None:
        registry.register_from("agent_runtime.tools.builtins:add_workspace", str(workspace))
    return registry


def add_calculator(registry: ToolRegistry) -> None:
    registry.add(Tool("calculator", calculate.__doc__ or "", schema_from_signature(calculate), calculate,
                      timeout_s=5, idempotent=True))


def add_workspace(registry: ToolRegistry, root: str) -> None:
    space = Workspace(root)
    registry.add(Tool("read_file", space.read_file.__doc__ or "", schema_from_signature(space.read_file),
                      space.read_file, timeout_s=10, idempotent=True))
    registry.add(Tool("list_files", space.list_files.__doc__ or "", schema_from_signature(space.list_files),
                      space.list_files, timeout_s=10, idempotent=True))


def add_memory(registry: ToolRegistry, namespace: str, memory: Memory) -> None:
    def remember(key: str, value: str) -> str:
        return memory.set(namespace, key, value)

    def recall(key: str) -> str:
        return memory.get(namespace, key)

    def forget(key: str) -> str:
        return memory.delete(namespace, key)

    def memory_keys(prefix: str = "") -> list[str]:
        return memory.keys(namespace, prefix)

    for fn, text in ((remember, "Store a value under a key, replacing what was there."),
                     (recall, "The value stored under a key."), (forget, "Delete a key."),
                     (memory_keys, "The stored keys (optionally those starting with a prefix).")):
        registry.add(Tool(fn.__name__, text, schema_from_signature(fn), fn, timeout_s=5, idempotent=True))
