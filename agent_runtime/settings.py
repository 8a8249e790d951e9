"""The agent runtime's settings: environment variables `DSV4_AGENT_*` (or a `.env`-style file), command-line flags
over them; every one has a default that runs embedded (SQLite under data/, one local model worker)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from foundation.clients.jobs import JobsTlsSettings
from foundation.clients.worker.settings import WorkerTlsSettings
from foundation.mode_policy import OperatorLimits
from foundation.readiness import ReadinessSettings
from foundation.webhooks.settings import WebhookSettings


class AgentSettings(WorkerTlsSettings, JobsTlsSettings, ReadinessSettings, WebhookSettings):
    model_config = SettingsConfigDict(env_prefix="DSV4_AGENT_", env_file=None, extra="ignore", cli_shortcuts={
        "workers": "worker", "jobs-target": "jobs", "database-url": "database", "api-keys-file": "api-keys"})

    database_url: str = Field("sqlite:///data/agent.db", description="SQLAlchemy URL: PostgreSQL in deployment")
    workers: str = Field("127.0.0.1:50051", description="model worker gRPC addresses, comma-separated (with a "
                         "registry, the workers it lists instead)")
    worker_registry: str | None = Field(None, description="worker registry, redis://HOST:PORT/DB: live workers, "
                                        "their loads and hot sessions (then `workers` may be empty); none: the "
                                        "`workers` addresses")
    worker_api_key: str | None = Field(None, description="API key for the model workers, if they require one")
    jobs_target: str | None = Field(None, description="the jobs service's gRPC address: Think Max turns run there "
                                    "(without it, Think Max runs directly on Think Max sessions only)")
    jobs_api_key: str | None = Field(None, description="API key for the jobs service")
    host: str = Field("127.0.0.1", description="address to serve on")
    port: int = Field(50071, description="gRPC port; 0: any free port (printed)")
    api_keys_file: str | None = Field(None, description="JSON file {key: tenant}; without it every caller is the "
                                      "default tenant")
    tls_cert: str | None = Field(None, description="PEM certificate chain: serve TLS (with tls_key)")
    tls_key: str | None = Field(None, description="PEM private key of tls_cert")
    tls_client_ca: str | None = Field(None, description="PEM CA bundle: require client certificates it signed")
    workspace: str | None = Field(None, description="directory the read_file / list_files tools may read")
    tool_plugins: str = Field("", description="more tools: `package.module:function` entries, comma-separated; "
                              "each function(registry, namespace) adds tools to an agent session's registry")
    require_approval: str = Field("", description="tools whose calls a human approves, comma-separated (an MCP "
                                  "server's as {server}__{tool})")
    mcp_servers_file: str | None = Field(None, description="JSON file of the MCP servers each tenant's sessions may "
                                         "name, {tenant or \"*\": {server: {command or url, ...}}} "
                                         "(agent_runtime/tools/mcp_config.py); none: no MCP servers")
    mcp_max_connections: int = Field(64, gt=0, description="MCP connections open at once, over every tenant (each "
                                     "stdio one a process); past it the least recently used idle one is closed")
    max_turns_per_tenant: int | None = Field(None, gt=0, description="turns a tenant may run at once")
    tokens_per_second_per_tenant: float | None = Field(None, gt=0, description="token bucket per tenant "
                                                       "(10 s of burst)")
    heartbeat_seconds: float = Field(5.0, gt=0, description="how often a running turn's heartbeat is renewed")
    stale_after_seconds: float = Field(30.0, gt=0, description="a turn whose heartbeat is older than this was "
                                       "orphaned by a crash (it ends interrupted, or is continued on a decision)")
    threads: int = Field(32, gt=0, description="gRPC handler threads (each attached caller holds one)")
    metrics_port: int | None = Field(None, ge=0, description="serve Prometheus metrics (turns, steps, tool calls, "
                                     "tokens) over HTTP on this port at `host`; 0: any free port (printed)")
    # Bounds on what a client sends (INVALID_ARGUMENT past them).
    max_request_bytes: int = Field(8 << 20, gt=0, description="largest CreateSession or RunTurn request, in bytes "
                                   "(default 8 MiB)")
    max_messages: int = Field(64, gt=0, description="messages one RunTurn may carry (default 64)")
    max_message_bytes: int = Field(1 << 20, gt=0, description="one message's content, in UTF-8 bytes "
                                   "(default 1 MiB)")
    max_system_prompt_bytes: int = Field(256 << 10, gt=0, description="an agent session's system prompt, in UTF-8 "
                                         "bytes (default 256 KiB)")
    max_session_tools: int = Field(64, gt=0, description="tool names one CreateSession may choose (default 64)")
    max_session_mcp_servers: int = Field(8, gt=0, description="MCP servers one CreateSession may name "
                                         "(default 8)")
    max_turn_steps: int = Field(64, gt=0, description="the largest step limit a turn may ask for (default 64; a turn "
                                "that names none gets 16)")
    # Tools (agent_runtime/tools/sandbox.py): what a tool call may cost this service.
    tool_timeout_seconds: float = Field(30.0, gt=0, description="no tool call runs longer (a tool may set a "
                                        "shorter timeout); a sandboxed one is killed then (default 30)")
    tool_max_output_bytes: int = Field(64 << 10, gt=0, description="a tool result's UTF-8 bytes; the rest is cut, "
                                       "saying so (default 64 KiB)")
    tool_processes: int = Field(4, gt=0, description="sandbox processes, so sandboxed tool calls running at once "
                                "(default 4)")
    tool_memory_mb: int = Field(1024, ge=0, description="address space of each sandbox process, in MiB; a call "
                                "past it fails (default 1024; 0: no limit)")
    approval_timeout_seconds: float | None = Field(None, gt=0, description="a tool call no human approves or "
                                                   "rejects within this many seconds is rejected, the model told "
                                                   "why; none: it waits")
    # Reasoning modes (foundation/mode_policy.py): which mode a turn that names none runs in, within what is allowed.
    mode_policy: str = Field("default", description="the policy that picks a turn's reasoning mode when the caller "
                             "names none: `default`, or package.module:object (a policy, or a class or function "
                             "that makes one)")
    allow_think_max: bool = Field(True, description="turns may run in Think Max (asked for, or chosen by the "
                                  "policy); otherwise Think High in its place")
    max_think_max_prefill: int = Field(262_144, ge=0, description="the most history a Think Max copy of a session "
                                       "may prefill for one turn, in tokens")
    min_tokens_for_thinking: int = Field(2_048, ge=0, description="below this token budget left, a turn answers "
                                         "without thinking")
    compact_keep_last: int = Field(8, ge=0, description="compaction keeps this many recent tool results verbatim")
    compact_at_fraction: float = Field(0.85, gt=0, le=1, description="compact a session's worker history when it "
                                       "passes this fraction of the model's context")

    def operator_limits(self) -> OperatorLimits:
        return OperatorLimits(self.allow_think_max, self.max_think_max_prefill, self.min_tokens_for_thinking)
