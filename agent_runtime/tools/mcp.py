"""MCP servers' tools in agent sessions, through the official `mcp` SDK. The operator configures the servers per
tenant (mcp_config.py); a session names some at creation, and their tools join its own as `{server}__{tool}`, with
the server's JSON schemas. A call is a tool call like any other (registry.py): held to its timeout and output bound,
subject to approval, and whatever goes wrong (a tool error, a server that died or does not answer) is an error result
the model reads, never a failed turn. A server that died is started again at its next call.

Why a thread of its own: an MCP connection (a stdio child process, or a streamable HTTP session) lives in anyio task
groups bound to the event loop and the task that opened it, while the agent loop runs each step's tool calls under a
short `asyncio.run` on the turn's thread. So `McpServers` owns one background thread with its own event loop, where
every connection is opened, used and closed (one per tenant and server, opened at first use, at most
`max_connections`, the least recently used closed past that). A tool's function hands its call to that loop; the
registry's timeout cancels it there too (the SDK then tells the server the request was cancelled)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jsonschema

from agent_runtime.tools.mcp_config import STORED_KEY, McpConfig, session_tool_name, stored_tool
from agent_runtime.tools.mcp_connection import CONNECT_TIMEOUT_S, McpConnection, render
from agent_runtime.tools.registry import Tool, ToolFailed
from foundation.wire import DEFAULT_LIMITS

log = logging.getLogger(__name__)

MAX_LISTED_PAGES = 16  # of a server's tools/list: a server that pages forever cannot hang a session's creation
_TOOL_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")


class McpServerUnavailable(ConnectionError):
    """An MCP server could not be started or reached (UNAVAILABLE at CreateSession; a call's error result at a
    turn). The message names the server only; its command or URL, and why, go to the log."""

    message_is_public = True


@dataclass(frozen=True)
class McpTool:
    """A server's tool as a session gets it."""

    server: str
    name: str  # the server's own
    tool: Tool  # named {server}__{name}

    def stored(self) -> dict[str, Any]:
        """Its OpenAI tool object as the session keeps it (with the server and the server's name of it)."""
        return stored_tool(self.tool.schema(), self.server, self.name)


class McpServers:
    """Every tenant's connections to its MCP servers, on one background event loop (started at first use)."""

    def __init__(self, config: McpConfig, *, timeout_s: float, max_output_bytes: int,
                 require_approval: Sequence[str] = (), max_connections: int = 64,
                 connect_timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        self.config, self.timeout_s, self.max_output_bytes = config, timeout_s, max_output_bytes
        self.require_approval = frozenset(require_approval)  # session tool names ({server}__{tool})
        self.max_connections, self.connect_timeout_s = max_connections, connect_timeout_s
        self._connections: dict[tuple[str, str], McpConnection] = {}  # touched on the loop's thread only
        self._opening: dict[tuple[str, str], asyncio.Lock] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Lock()

    # -- from the service's threads --------------------------------------------------------------------------------

    def list_tools(self, tenant: str, servers: Sequence[str]) -> list[McpTool]:
        """The tools of these servers (each started or reached now if it is not yet), for a new session.
        UnknownMcpServer for a server the tenant does not have; McpServerUnavailable for one that does not answer."""
        self.config.check(tenant, list(servers))
        tools = []
        for server in servers:
            future = asyncio.run_coroutine_threadsafe(self._listing(tenant, server), self._running_loop())
            try:
                listing = future.result(self.connect_timeout_s * 2)
            except concurrent.futures.TimeoutError:
                future.cancel()
                raise McpServerUnavailable(f"MCP server {server!r} did not list its tools in time") from None
            tools += [McpTool(server, name, self._tool(tenant, server, name, description, schema))
                      for name, description, schema in self._offered(tenant, server, listing)]
        return tools

    def session_tools(self, tenant: str, stored: Sequence[dict[str, Any]]) -> list[Tool]:
        """A session's MCP tools from the tool objects it keeps (McpTool.stored): no server is reached, so one that
        is down fails its own calls, not the turn."""
        return [self._tool(tenant, tool[STORED_KEY]["server"], tool[STORED_KEY]["tool"],
                           tool["function"].get("description", ""), tool["function"].get("parameters") or {})
                for tool in stored if STORED_KEY in tool]

    def close(self) -> None:
        """Close every connection (stdio servers get their stdin closed, then are stopped) and the loop."""
        with self._started:
            loop, thread, self._loop = self._loop, self._thread, None
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._close_all(), loop).result(30)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            if not thread.is_alive():
                loop.close()

    # -- on the loop -------------------------------------------------------------------------------------------

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._started:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._loop.run_forever, name="mcp-servers", daemon=True)
                self._thread.start()
            return self._loop

    def _offered(self, tenant: str, server: str, listing: list) -> list[tuple[str, str, dict[str, Any]]]:
        """(name, description, schema) of the listed tools the session may have: those the operator allows, whose
        session name the worker accepts and whose schema is one; the others are left out, saying so in the log."""
        allowed = self.config.servers(tenant)[server].tools
        offered = []
        for tool in listing:
            name = session_tool_name(server, tool.name)
            if allowed is not None and tool.name not in allowed:
                continue
            if len(name) > DEFAULT_LIMITS.max_tool_name_chars or not set(name) <= _TOOL_NAME_CHARS:
                log.warning("MCP server %s: tool %r left out: %r is not a tool name the model worker accepts",
                            server, tool.name, name)
                continue
            try:
                jsonschema.Draft202012Validator.check_schema(tool.input_schema)
            except jsonschema.SchemaError as error:
                log.warning("MCP server %s: tool %r left out: its input schema is invalid (%s)", server, tool.name,
                            error.message)
                continue
            offered.append((tool.name, tool.description or tool.title or "", tool.input_schema))
        return offered

    def _tool(self, tenant: str, server: str, name: str, description: str, parameters: dict[str, Any]) -> Tool:
        config = self.config.servers(tenant).get(server)  # None: no longer configured (its calls fail)
        timeout_s = min(config.timeout_seconds or self.timeout_s, self.timeout_s) if config else self.timeout_s
        max_bytes = self.max_output_bytes
        if config is not None and config.max_output_bytes is not None:
            max_bytes = min(config.max_output_bytes, max_bytes)
        session_name = session_tool_name(server, name)

        async def call(**arguments: Any) -> str:
            future = asyncio.run_coroutine_threadsafe(self._call(tenant, server, name, arguments),
                                                      self._running_loop())
            return await asyncio.wrap_future(future)  # cancelled (timed out) here: cancelled there too

        return Tool(session_name, description, parameters, call, timeout_s=timeout_s, max_output_bytes=max_bytes,
                    requires_approval=(config is not None and config.requires_approval(name))
                    or session_name in self.require_approval)

    async def _call(self, tenant: str, server: str, name: str, arguments: dict[str, Any]) -> str:
        from mcp.shared.exceptions import MCPError
        from mcp_types import CONNECTION_CLOSED

        try:  # a server being started goes on starting if this call times out first: the next call finds it
            connection = await asyncio.shield(self._connected(tenant, server))
        except McpServerUnavailable as error:
            raise ToolFailed(f"{error} (tried again at the next call)") from None
        connection.calls += 1
        try:
            result = await connection.client.call_tool(name, arguments)
        except MCPError as error:
            if error.code != CONNECTION_CLOSED:
                raise ToolFailed(f"MCP server {server!r}: {error.message} (code {error.code})") from None
            await self._drop(tenant, server, connection)
            raise ToolFailed(f"MCP server {server!r} closed the connection during the call (the next call "
                             "reconnects, starting a stdio server again)") from None
        except Exception as error:  # noqa: BLE001 - the transport's own failures (a broken pipe, a refused POST)
            log.warning("MCP server %s of %s failed a call: %r", server, tenant, error)
            await self._drop(tenant, server, connection)
            raise ToolFailed(f"MCP server {server!r} failed: {type(error).__name__} (reconnected at the next "
                             "call)") from None
        finally:
            connection.calls -= 1
        text = render(result)
        if result.is_error:
            raise ToolFailed(text or f"the MCP tool {name!r} failed")
        return text

    async def _listing(self, tenant: str, server: str) -> list:
        """The server's tools, listed once per connection."""
        connection = await self._connected(tenant, server)
        if connection.listing is None:
            tools, cursor = [], None
            try:
                for _ in range(MAX_LISTED_PAGES):
                    page = await connection.client.list_tools(cursor=cursor)
                    tools += page.tools
                    if not (cursor := page.next_cursor):
                        break
            except Exception as error:  # noqa: BLE001 - an error answer, a malformed one or a lost connection
                log.warning("MCP server %s of %s did not list its tools: %r", server, tenant, error)
                await self._drop(tenant, server, connection)
                raise McpServerUnavailable(f"MCP server {server!r} did not list its tools") from None
            connection.listing = tools
        return connection.listing

    async def _connected(self, tenant: str, server: str) -> McpConnection:
        """The tenant's open connection to this server: the one there is when it is alive, else a new one (a
        stdio server started again). McpServerUnavailable when it cannot be opened."""
        key = (tenant, server)
        async with self._opening.setdefault(key, asyncio.Lock()):
            connection = self._connections.get(key)
            if connection is None or not connection.alive:
                if connection is not None:
                    log.warning("MCP server %s of %s was lost; starting it again", server, tenant)
                    await self._drop(tenant, server, connection)
                config = self.config.servers(tenant).get(server)
                if config is None:
                    raise McpServerUnavailable(f"MCP server {server!r} is no longer configured for this tenant")
                connection = McpConnection(config)
                try:
                    await connection.open(self.connect_timeout_s)
                except Exception as error:  # noqa: BLE001 - whatever it was, the server is not there for now
                    log.warning("MCP server %s (%s) of %s could not be opened: %r", server, config.target, tenant,
                                error)
                    raise McpServerUnavailable(f"MCP server {server!r} could not be started or reached") from None
                self._connections[key] = connection
                await self._close_idle_past_limit(keep=key)
        connection.last_used = time.monotonic()
        return connection

    async def _drop(self, tenant: str, server: str, connection: McpConnection) -> None:
        if self._connections.get((tenant, server)) is connection:
            del self._connections[(tenant, server)]
        await connection.close()

    async def _close_idle_past_limit(self, keep: tuple[str, str]) -> None:
        """Past `max_connections`, the least recently used connections with no call running are closed (a stdio
        server stopped; opened again at its next use)."""
        idle = sorted((c.last_used, key) for key, c in self._connections.items() if not c.calls and key != keep)
        for _, key in idle[:max(0, len(self._connections) - self.max_connections)]:
            await self._drop(*key, self._connections[key])

    async def _close_all(self) -> None:
        await asyncio.gather(*(c.close() for c in self._connections.values()), return_exceptions=True)
        self._connections.clear()
