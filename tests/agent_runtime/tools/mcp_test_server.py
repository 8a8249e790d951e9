"""A real MCP server for the agent runtime's MCP tests (and the README's example), built with the official SDK's
`MCPServer` (FastMCP in mcp 1.x). Over stdio by default; `--http PORT` serves streamable HTTP on 127.0.0.1:PORT/mcp
instead. Its tools: arithmetic; the weather (an enum argument: what a model with random weights can be made to call);
one that sleeps (timeouts); one that answers too much (output bounds); one that raises (tool errors); one that kills
its own process (a dead server restarted); one that answers an image (non-text content); one that says which process
answered (restarts)."""

from __future__ import annotations

import argparse
import base64
import os
import time
from typing import Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.utilities.types import Image

server = MCPServer("agent-runtime-test", log_level="ERROR")  # a failing tool is not an error of the server


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def weather(city: Literal["Lima", "Paris", "Tokyo"]) -> str:
    """Today's weather in a city."""
    return f"{city}: 18 °C, clear"


@server.tool()
def slow(seconds: float) -> str:
    """Sleep, then answer."""
    time.sleep(seconds)
    return f"slept {seconds:g} s"


@server.tool()
def big(n: int) -> str:
    """n characters of text."""
    return "x" * n


@server.tool()
def fail(reason: str = "asked to fail") -> str:
    """Raise an error (a ToolError: its message reaches the client; any other exception's is hidden)."""
    raise ToolError(reason)


@server.tool()
def crash() -> str:
    """Exit the server process at once, mid-call."""
    os._exit(1)


@server.tool()
def picture() -> Image:
    """A one-pixel PNG."""
    return Image(data=base64.b64decode(PIXEL), format="png")


@server.tool()
def pid() -> int:
    """The server's process ID."""
    return os.getpid()


PIXEL = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=")

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", type=int, help="serve streamable HTTP on this port instead of stdio")
    args = parser.parse_args()
    if args.http:
        print(f"serving MCP on 127.0.0.1:{args.http}", flush=True)
        server.run("streamable-http", host="127.0.0.1", port=args.http)
    else:
        server.run()
