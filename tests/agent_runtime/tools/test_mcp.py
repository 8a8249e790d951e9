"""MCP servers' tools (agent_runtime/tools/mcp*.py) against a real MCP server process (mcp_test_server.py, the
official SDK's): the README's operator config checked and used; tools listed namespaced with their schemas, called
through the registry with their timeouts and output bounds, approval from the config and the service's setting; a
tool's error, a server that cannot be started and a server that died all end as error results, and a dead server is
started again at the next call; the same over streamable HTTP, reconnecting after the server restarts."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from agent_runtime.tools import Tool, ToolCall, ToolRegistry
from agent_runtime.tools.mcp import McpServers, McpServerUnavailable, McpTool
from agent_runtime.tools.mcp_config import (
    McpConfig,
    McpConfigError,
    UnknownMcpServer,
    load_mcp_config,
    mcp_servers_of,
)

ROOT = Path(__file__).parents[3]
SERVER = Path(__file__).with_name("mcp_test_server.py")


def readme_config() -> dict:
    """The README's example operator file, its server started with this interpreter."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### MCP tools"):]
    block = re.search(r"```json\n(.*?)```", section[:section.index("\n## ")], re.S).group(1)
    return json.loads(block.replace(".venv/bin/python", sys.executable))


@pytest.fixture(scope="module")
def servers():
    config = readme_config()
    config["acme"]["broken"] = {"command": [str(ROOT / "no-such-mcp-server")]}
    servers = McpServers(McpConfig.model_validate(config), timeout_s=30, max_output_bytes=64 << 10,
                         require_approval=["demo__fail"])
    yield servers
    servers.close()


def registry_of(tools) -> ToolRegistry:
    registry = ToolRegistry()
    for tool in tools:
        registry.add(tool)
    return registry


def call(registry: ToolRegistry, name: str, **arguments):
    return asyncio.run(registry.call(ToolCall("c1", name, arguments)))


def test_the_operator_file_is_checked_whole_at_start(tmp_path):
    def problem(config) -> str:
        path = tmp_path / "mcp.json"
        path.write_text(config if isinstance(config, str) else json.dumps(config))
        with pytest.raises(McpConfigError) as error:
            load_mcp_config(str(path))
        return str(error.value)

    assert "either command" in problem({"*": {"a": {"command": ["x"], "url": "http://h/mcp"}}})
    assert "either command" in problem({"*": {"a": {}}})
    assert "server name 'a__b'" in problem({"*": {"a__b": {"command": ["x"]}}})
    assert "server name 'a_'" in problem({"*": {"a_": {"command": ["x"]}}})
    assert "url: http(s)" in problem({"acme": {"a": {"url": "file:///etc/passwd"}}})
    assert "headers are for HTTP" in problem({"acme": {"a": {"command": ["x"], "headers": {"k": "v"}}}})
    assert "Extra inputs" in problem({"acme": {"a": {"command": ["x"], "shell": True}}})
    assert "greater than 0" in problem({"acme": {"a": {"command": ["x"], "timeout_seconds": 0}}})
    assert "mcp.json" in problem("{not json")
    with pytest.raises(McpConfigError, match="No such file"):
        load_mcp_config(str(tmp_path / "missing.json"))
    config = McpConfig.model_validate(readme_config())
    assert sorted(config.servers("acme")) == ["demo", "search"] and sorted(config.servers("other")) == ["demo"]
    assert config.names_server_tool("demo__crash") and not config.names_server_tool("calculator")


def test_a_stdio_server_s_tools_join_namespaced_and_are_called_within_their_bounds(servers):
    listed = servers.list_tools("acme", ["demo"])
    assert {(entry.server, entry.name) for entry in listed} >= {("demo", "add"), ("demo", "weather")}
    tools = {entry.tool.name: entry.tool for entry in listed}
    assert sorted(tools) == ["demo__add", "demo__big", "demo__crash", "demo__fail", "demo__picture", "demo__pid",
                             "demo__slow", "demo__weather"]
    add = tools["demo__add"]
    assert add.description == "Add two integers." and add.parameters["required"] == ["a", "b"]
    assert add.parameters["properties"]["a"]["type"] == "integer"
    assert (add.timeout_s, add.max_output_bytes) == (10, 4096)  # the server's own bounds, under the service's
    # Approval: the config's (its own tool name) and the service's setting ({server}__{tool}).
    assert {name for name, tool in tools.items() if tool.requires_approval} == {"demo__crash", "demo__fail"}
    registry = registry_of(tools.values())

    assert call(registry, "demo__add", a=2, b=3).content == '{"result": 5}'
    assert call(registry, "demo__add", a="two", b=3).is_error  # the schema is checked before the server is
    big = call(registry, "demo__big", n=10_000)
    assert big.truncated and big.content.endswith("[output truncated: 10,014 bytes, the first 4,096 shown]")
    failed = call(registry, "demo__fail", reason="the disk is full")
    assert failed.is_error and "the disk is full" in json.loads(failed.content)["error"]
    assert json.loads(call(registry, "demo__picture").content) == {"type": "image", "mime_type": "image/png",
                                                                  "base64_chars": 92}
    registry.add(replace(tools["demo__slow"], name="slow_briefly", timeout_s=0.3))  # cut short on our side...
    started = time.monotonic()
    assert json.loads(call(registry, "slow_briefly", seconds=30).content) == {"error": "timed out after 0.3 s"}
    assert time.monotonic() - started < 5
    assert call(registry, "demo__add", a=1, b=1).content == '{"result": 2}'  # ...and the server serves on


def test_a_dead_server_fails_its_call_and_is_started_again_at_the_next(servers):
    registry = registry_of(entry.tool for entry in servers.list_tools("acme", ["demo"]))
    before = json.loads(call(registry, "demo__pid").content)["result"]
    crashed = call(registry, "demo__crash")
    assert crashed.is_error and "closed the connection during the call" in crashed.content
    after = json.loads(call(registry, "demo__pid").content)["result"]
    assert after != before  # a new process


def test_unknown_and_unreachable_servers(servers):
    with pytest.raises(UnknownMcpServer, match="no MCP server 'nope' for this tenant; configured: broken, demo, "
                                               "search"):
        servers.list_tools("acme", ["nope"])
    with pytest.raises(UnknownMcpServer, match="configured: demo$"):  # another tenant's server is not its own
        servers.list_tools("other", ["broken"])
    with pytest.raises(McpServerUnavailable, match="MCP server 'broken' could not be started or reached"):
        servers.list_tools("acme", ["broken"])
    # At a turn, a session's tools come from the tool objects it keeps, and a server that cannot be reached fails
    # the call, not the turn.
    lookup = Tool("broken__lookup", "Look up.", {"type": "object", "properties": {}}, lambda: None)
    stored = [McpTool("broken", "lookup", lookup).stored(), Tool("calculator", "", {}, lambda: None).schema()]
    assert stored[0]["mcp"] == {"server": "broken", "tool": "lookup"} and mcp_servers_of(stored) == ["broken"]
    registry = registry_of(servers.session_tools("acme", stored))
    assert [tool.name for tool in registry.all()] == ["broken__lookup"]
    result = call(registry, "broken__lookup")
    assert result.is_error and "could not be started or reached (tried again at the next call)" in result.content


def test_a_streamable_http_server_and_its_restart(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = McpConfig.model_validate({"acme": {"web": {"url": f"http://127.0.0.1:{port}/mcp",
                                                        "headers": {"X-Tenant-Token": "t"}}}})
    servers = McpServers(config, timeout_s=30, max_output_bytes=1 << 10)
    server = http_server(port, tmp_path / "http-1.log")
    try:
        registry = registry_of(entry.tool for entry in servers.list_tools("acme", ["web"]))
        assert registry.get("web__add").parameters["required"] == ["a", "b"]
        assert call(registry, "web__add", a=40, b=2).content == '{"result": 42}'
        server.kill()
        server.wait()
        assert call(registry, "web__add", a=1, b=2).is_error  # gone: an error result
        server = http_server(port, tmp_path / "http-2.log")
        assert call(registry, "web__add", a=1, b=2).content == '{"result": 3}'  # back: reconnected
    finally:
        server.kill()
        servers.close()


def http_server(port: int, log: Path) -> subprocess.Popen:
    """The test server on streamable HTTP, once it accepts connections."""
    server = subprocess.Popen([sys.executable, str(SERVER), "--http", str(port)], stdout=log.open("w"),
                              stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        assert server.poll() is None and time.monotonic() < deadline, log.read_text()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server
        except OSError:
            time.sleep(0.05)
