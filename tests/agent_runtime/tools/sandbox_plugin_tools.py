"""Tools for the sandbox tests, registered by entry (`sandbox_plugin_tools:register`) so a sandbox process finds them:
one that holds the interpreter lock far past its timeout, one that prints and answers too much, one that raises, one
that says where it ran."""

from __future__ import annotations

import os

from agent_runtime.tools import ToolRegistry


def register(registry: ToolRegistry, namespace: str) -> None:
    @registry.tool(timeout_s=1)
    def stall(size: int) -> str:
        """One C-level big-integer power: minutes without releasing the interpreter lock."""
        return str(pow(9, size * size).bit_length())

    @registry.tool()
    def chatty(repeat: int) -> str:
        """Prints (the sandbox's protocol must not see it) and answers more than the output bound."""
        print("noise on stdout " * repeat)
        return "é" * repeat

    @registry.tool()
    def fails(reason: str) -> str:
        """Raises."""
        raise ValueError(reason)

    @registry.tool()
    def where() -> dict:
        """The process it runs in and the namespace it was registered for."""
        return {"pid": os.getpid(), "namespace": namespace}
