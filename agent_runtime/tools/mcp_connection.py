"""One connection to an MCP server through the official `mcp` SDK's `Client` (a stdio child process, or a streamable
HTTP session), on the event loop of `McpServers` (mcp.py), and what the model reads of a tool's result."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from agent_runtime.tools.mcp_config import McpServerConfig

if TYPE_CHECKING:  # the SDK is imported when a server is first reached: it takes a second to import
    from mcp import Client

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 30.0  # to start a server (or reach it) and list its tools
HTTP_READ_TIMEOUT_S = 300.0  # the SDK's own default: a response stream may stay open that long


class McpConnection:
    """One open SDK `Client`, held by a task of its own: anyio's task groups are left by the task that entered them.
    That task leaves when the connection is closed, or when its transport ends (a stdio server that exited): then
    `alive` is False and the next use opens a new one."""

    def __init__(self, config: McpServerConfig) -> None:
        self.config = config
        self.client: Client | None = None
        self.listing: list | None = None
        self.calls, self.last_used = 0, time.monotonic()
        self._closing = asyncio.Event()
        self._holder: asyncio.Task | None = None

    @property
    def alive(self) -> bool:
        return self._holder is not None and not self._holder.done() and not self._closing.is_set()

    async def open(self, timeout_s: float) -> None:
        opened: asyncio.Future = asyncio.get_running_loop().create_future()
        self._holder = asyncio.create_task(self._hold(opened))
        try:
            self.client = await asyncio.wait_for(asyncio.shield(opened), timeout_s)
        except BaseException:
            opened.cancel()  # the holder, if it still gets there, leaves at once
            await self.close()
            raise

    async def close(self) -> None:
        self._closing.set()
        if self._holder is None:
            return
        if self.client is None:  # still opening (a server that does not answer its handshake): nothing to leave
            self._holder.cancel()
        await asyncio.wait([self._holder], timeout=10)  # a stdio server gets 2 s to exit, then is killed

    async def _hold(self, opened: asyncio.Future) -> None:
        from mcp import Client

        try:
            async with Client(self._transport(), cache=None) as client:
                if opened.done():  # open() stopped waiting
                    return
                opened.set_result(client)
                await self._closing.wait()
        except BaseException as error:  # noqa: BLE001 - ends the connection; open() or the next call reports it
            if not opened.done():
                opened.set_exception(error if isinstance(error, Exception) else ConnectionError(repr(error)))
            elif not self._closing.is_set():
                log.warning("MCP server %s: connection ended: %r", self.config.target, error)
        finally:
            self._closing.set()

    @asynccontextmanager
    async def _transport(self):
        """The SDK transport for the config, its messages passed on through a stream of ours: when the server's
        end closes (a stdio server exited), the connection knows at once, not at its next call."""
        import anyio

        async with self._streams() as (read, write):
            forward, received = anyio.create_memory_object_stream(0)

            async def pass_on() -> None:
                async with forward:
                    async for message in read:
                        await forward.send(message)
                self._closing.set()  # the server's end closed: the holder leaves, and the SDK's client with it

            async with anyio.create_task_group() as group:
                group.start_soon(pass_on)
                try:
                    yield received, write
                finally:
                    group.cancel_scope.cancel()

    @asynccontextmanager
    async def _streams(self):
        if self.config.command is not None:
            from mcp import StdioServerParameters
            from mcp.client.stdio import stdio_client

            command, *args = self.config.command
            parameters = StdioServerParameters(command=command, args=args, env=dict(self.config.env) or None,
                                               cwd=self.config.cwd)
            async with stdio_client(parameters, errlog=sys.stderr) as streams:  # its log: the service's stderr
                yield streams
        else:
            import httpx2
            from mcp.client.streamable_http import streamable_http_client

            timeout = httpx2.Timeout(CONNECT_TIMEOUT_S, read=HTTP_READ_TIMEOUT_S)
            async with httpx2.AsyncClient(headers=dict(self.config.headers), timeout=timeout) as http:
                async with streamable_http_client(self.config.url, http_client=http) as streams:
                    yield streams


def render(result) -> str:
    """What the model reads of an MCP CallToolResult: its structured content as JSON when it has one (its text
    blocks then carry the same, serialized: the spec's advice to servers), else its text; other content (images,
    audio, resources) as a short JSON description, never its bytes. An error's text, always."""
    structured = result.structured_content is not None and not result.is_error
    parts = [json.dumps(result.structured_content, ensure_ascii=False)] if structured else []
    for block in result.content:
        if block.type != "text":
            parts.append(json.dumps(_describe(block), ensure_ascii=False))
        elif not structured:
            parts.append(block.text)
    return "\n".join(parts)


def _describe(block) -> dict[str, Any]:
    if block.type in ("image", "audio"):
        return {"type": block.type, "mime_type": block.mime_type, "base64_chars": len(block.data)}
    if block.type == "resource_link":
        return {"type": "resource_link", "uri": str(block.uri), "name": block.name, "mime_type": block.mime_type}
    if block.type == "resource":
        resource = block.resource
        described = {"type": "resource", "uri": str(resource.uri), "mime_type": resource.mime_type}
        if getattr(resource, "text", None) is not None:
            described["text"] = resource.text
        else:
            described["base64_chars"] = len(getattr(resource, "blob", ""))
        return described
    return {"type": block.type}
