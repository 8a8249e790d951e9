"""The operator's MCP servers: which servers each tenant's agent sessions may name, and how to reach each. One JSON
file (`AgentSettings.mcp_servers_file`), checked whole when the service starts:

    {"*":    {"demo":   {"command": [".venv/bin/python", "tests/agent_runtime/tools/mcp_test_server.py"]}},
     "acme": {"search": {"url": "https://mcp.example.com/mcp", "headers": {"Authorization": "Bearer ..."},
                         "require_approval": ["delete_index"], "timeout_seconds": 10}}}

The top-level keys are tenants; "*" holds the servers every tenant gets (a tenant's own server of the same name
wins). A session names servers, never commands or URLs: a caller cannot make the runtime start or reach anything the
operator did not write here. A server's tools join a session named `{server}__{tool}`; the session keeps each one's
server and own name in its tool object (`STORED_KEY`), so its turns find them again without asking the server."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError, field_validator, model_validator

EVERY_TENANT = "*"
SEPARATOR = "__"  # between a server's name and its tool's in the session's tool names
STORED_KEY = "mcp"  # in a session's stored tool object: {"server": NAME, "tool": the server's own tool name}
MAX_SERVER_CHARS = 32
MAX_TENANT_CHARS = 256  # foundation.tenancy's
# Letters and digits, single '-' or '_' between them: never "__" nor a trailing '_', so `{server}__{tool}` splits
# one way only, and within the worker's tool-name characters.
_SERVER_NAME = re.compile(r"[A-Za-z0-9]+(?:[-_][A-Za-z0-9]+)*")


class McpConfigError(ValueError):
    """The operator's MCP servers file cannot be read or is not valid (the service does not start)."""


class UnknownMcpServer(ValueError):
    """A session named an MCP server its tenant has not been given (INVALID_ARGUMENT)."""


class McpServerConfig(BaseModel):
    """One server: a command started over stdio, or a streamable HTTP URL; how long its calls may run, how much of
    their output the model reads, and which of its calls a human approves first."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: list[str] | None = Field(None, min_length=1, description="argv of a stdio server (no shell)")
    env: dict[str, str] = Field(default_factory=dict, description="stdio: environment added to PATH, HOME, ...")
    cwd: str | None = Field(None, description="stdio: the server's working directory")
    url: str | None = Field(None, description="a streamable HTTP endpoint, http(s)://HOST[:PORT]/PATH")
    headers: dict[str, str] = Field(default_factory=dict, description="HTTP: headers of every request")
    timeout_seconds: float | None = Field(None, gt=0, description="a call's limit (default and cap: the "
                                          "service's tool timeout)")
    max_output_bytes: int | None = Field(None, gt=0, description="a result's UTF-8 bytes the model reads (default "
                                         "and cap: the service's tool output bound)")
    require_approval: bool | list[str] = Field(False, description="true: every call of its tools waits for a "
                                               "human; or the names of those that do (the server's own names)")
    tools: list[str] | None = Field(None, description="offer only these of its tools (default: all it lists)")

    @field_validator("command")
    @classmethod
    def _argv(cls, command: list[str] | None) -> list[str] | None:
        if command is not None and any(not part or "\0" in part for part in command):
            raise ValueError("command: non-empty arguments without NUL characters")
        return command

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerConfig:
        if (self.command is None) == (self.url is None):
            raise ValueError("give either command (a stdio server) or url (streamable HTTP), not both")
        if self.url is not None:
            parts = urlsplit(self.url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"url: http(s)://HOST[:PORT]/PATH, not {self.url!r}")
            if self.env or self.cwd:
                raise ValueError("env and cwd are for stdio servers (command)")
        elif self.headers:
            raise ValueError("headers are for HTTP servers (url)")
        return self

    @property
    def target(self) -> str:
        """What the log names it by (the command's program or the URL without its query)."""
        if self.command is not None:
            return self.command[0]
        parts = urlsplit(self.url or "")
        return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"

    def requires_approval(self, tool: str) -> bool:
        return self.require_approval is True or (isinstance(self.require_approval, list)
                                                 and tool in self.require_approval)


class McpConfig(RootModel[dict[str, dict[str, McpServerConfig]]]):
    """tenant ("*": every tenant) -> server name -> server."""

    root: dict[str, dict[str, McpServerConfig]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _names(self) -> McpConfig:
        for tenant, servers in self.root.items():
            if not tenant or len(tenant) > MAX_TENANT_CHARS:
                raise ValueError(f"tenant {tenant[:40]!r}: 1-{MAX_TENANT_CHARS} characters")
            for name in servers:
                if len(name) > MAX_SERVER_CHARS or not _SERVER_NAME.fullmatch(name):
                    raise ValueError(f"{tenant}: server name {name[:40]!r}: 1-{MAX_SERVER_CHARS} letters and "
                                     "digits, with single '-' or '_' between them")
        return self

    def servers(self, tenant: str) -> dict[str, McpServerConfig]:
        """The servers this tenant's sessions may name."""
        return {**self.root.get(EVERY_TENANT, {}), **self.root.get(tenant, {})}

    def server_names(self) -> set[str]:
        """Every configured server's name, whatever its tenant."""
        return {name for servers in self.root.values() for name in servers}

    def names_server_tool(self, name: str) -> bool:
        """Whether `name` is a session tool name of a configured server ({server}__{tool}; a server's name has no
        "__", so the first one ends it)."""
        server, separator, tool = name.partition(SEPARATOR)
        return bool(separator and tool) and server in self.server_names()

    def check(self, tenant: str, names: list[str]) -> None:
        """UnknownMcpServer unless this tenant has every one of `names`."""
        offered = self.servers(tenant)
        unknown = [name for name in names if name not in offered]
        if unknown:
            raise UnknownMcpServer(f"mcp_servers: no MCP server {', '.join(map(repr, unknown))} for this tenant; "
                                   f"configured: {', '.join(sorted(offered)) or 'none'}")


def load_mcp_config(path: str | None) -> McpConfig:
    """The file's servers (none without a file); McpConfigError names the file and what is wrong in it."""
    if path is None:
        return McpConfig()
    try:
        return McpConfig.model_validate(json.loads(Path(path).read_text()))
    except (OSError, json.JSONDecodeError) as error:
        raise McpConfigError(f"MCP servers file {path}: {error}") from None
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in error.errors())
        raise McpConfigError(f"MCP servers file {path}: {problems}") from None


def session_tool_name(server: str, tool: str) -> str:
    return f"{server}{SEPARATOR}{tool}"


def stored_tool(schema: dict, server: str, tool: str) -> dict:
    """A session's OpenAI tool object for an MCP tool, as the session keeps it: with its server and own name."""
    return {**schema, STORED_KEY: {"server": server, "tool": tool}}


def mcp_servers_of(stored: list[dict]) -> list[str]:
    """The MCP servers among a session's stored tool objects, in order (a server that offered no tool is not)."""
    return list(dict.fromkeys(tool[STORED_KEY]["server"] for tool in stored if STORED_KEY in tool))

