"""Tools an agent's model may call: a registry of JSON-schema tools and the built-ins."""

from agent_runtime.tools.builtins import add_builtins
from agent_runtime.tools.memory import KeyValueMemory
from agent_runtime.tools.registry import Tool, ToolCall, ToolRegistry, ToolResult

__all__ = ["KeyValueMemory", "Tool", "ToolCall", "ToolRegistry", "ToolResult", "add_builtins"]
