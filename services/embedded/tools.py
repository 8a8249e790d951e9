"""The demo's tool, plugged into the embedded agent service (`DSV4_AGENT_TOOL_PLUGINS`). Its parameter is a closed
set, so the call the random-weight `tiny` model writes under the worker's grammar ends within a few tokens (an open
string, like the calculator's expression, would run on as noise)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from agent_runtime.tools import ToolRegistry

ZONES = ["UTC", "Europe/Paris", "Asia/Tokyo", "America/Lima"]


def register(registry: ToolRegistry, namespace: str) -> None:
    @registry.tool(idempotent=True, parameters={
        "type": "object", "properties": {"zone": {"type": "string", "enum": ZONES}},
        "required": ["zone"], "additionalProperties": False})
    def clock(zone: str) -> str:
        """The current date and time in a time zone."""
        return dt.datetime.now(ZoneInfo(zone)).strftime(f"%Y-%m-%d %H:%M:%S in {zone}")
