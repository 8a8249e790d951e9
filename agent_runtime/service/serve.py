"""`python -m agent_runtime serve`: the agent service on a gRPC port, with health (grpc.health.v1), reflection and
SIGTERM draining (health flips to NOT_SERVING, running turns get a grace period, then the process exits; a turn
still running ends interrupted and continues from SQL). It serves from the start whatever is up: ready once its
database answers (migrated then) and its worker registry does (foundation/readiness.py); NOT_SERVING and
refusing calls UNAVAILABLE until then. Model workers are not among its dependencies: a turn routes to whichever is up,
and fails UNAVAILABLE when none is."""

from __future__ import annotations

import argparse
import importlib
from concurrent import futures

import grpc
from grpc_health.v1 import health
from sqlalchemy import text

from agent_runtime.compaction import ClearToolResults, Compaction, Compactor
from agent_runtime.loop import AgentLoop
from agent_runtime.service.metrics import AgentMetrics
from agent_runtime.service.requests import RequestBounds
from agent_runtime.service.runs import TurnRunner
from agent_runtime.service.server import SERVICE_NAME, AgentServicer
from agent_runtime.service.webhooks import TurnWebhooks
from agent_runtime.settings import AgentSettings
from agent_runtime.store.memory import SqlMemory
from agent_runtime.store.transcript import TranscriptStore, upgrade
from agent_runtime.store.turns import TurnStore
from agent_runtime.store.webhooks import TurnWebhookStore
from agent_runtime.tools import ToolRegistry, add_builtins
from agent_runtime.tools.mcp import McpServers
from agent_runtime.tools.mcp_config import McpConfigError, load_mcp_config
from agent_runtime.tools.sandbox import ToolSandbox
from foundation.auth import load_api_keys
from foundation.clients.worker import WorkerClient
from foundation.clients.worker.policy import worker_tls
from foundation.limits import TokenRates
from foundation.metrics import serve_metrics
from foundation.mode_policy import load_policy
from foundation.readiness import Dependency, Readiness, RefuseUntilReady
from foundation.registry import WorkerPool
from foundation.serving import CHANNEL_OPTIONS, TlsFiles, add_health_and_reflection, set_serving, tls_files
from foundation.settings import add_settings_cli, settings_from
from foundation.sql import make_engine, sessions
from foundation.tracing import configure_tracing, grpc_server_interceptors
from protos.dsv4.agent.v1 import agent_pb2_grpc


def add_serve_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", help="run the agent service (gRPC); flags override DSV4_AGENT_* settings")
    add_settings_cli(p, AgentSettings)
    p.set_defaults(func=run_serve)


class Runtime:
    """The parts of one agent runtime process, built from its settings. With `migrate_later`, nothing here reaches
    the database: `dependencies()` migrates it once it answers (the `serve` command's way); without, it is migrated
    now (embedding, tests)."""

    def __init__(self, settings: AgentSettings, *, migrate_later: bool = False) -> None:
        if not migrate_later:
            upgrade(settings.database_url)
        self.settings = settings
        self.db = db = sessions(make_engine(settings.database_url))
        self.store, self.memory = TranscriptStore(db), SqlMemory(db)
        tls = worker_tls(settings)
        self.workers = WorkerPool.open(settings.worker_registry, settings.workers,
                                       lambda address: WorkerClient(address, api_key=settings.worker_api_key, **tls))
        self.jobs = None
        if settings.jobs_target:
            from foundation.clients.jobs import JobsClient

            self.jobs = JobsClient(settings.jobs_target, api_key=settings.jobs_api_key, tls_ca=settings.jobs_tls_ca,
                                   tls_cert=settings.jobs_tls_cert, tls_key=settings.jobs_tls_key)
        approval, workspace = _names(settings.require_approval), settings.workspace
        plugins = [_plugin(entry) for entry in _names(settings.tool_plugins)]
        try:
            mcp_config = load_mcp_config(settings.mcp_servers_file)
        except McpConfigError as error:
            raise SystemExit(str(error)) from None
        # Approval of an MCP server's tool ({server}__{tool}) is applied when its tools are built (they are not
        # known before a session names the server); the rest names the registry's tools, checked below.
        mcp_approval = [name for name in approval if mcp_config.names_server_tool(name)]
        approval = [name for name in approval if name not in mcp_approval]
        # Its connections (child processes too) are opened at first use and closed with the runtime.
        self.mcp = McpServers(mcp_config, timeout_s=settings.tool_timeout_seconds,
                              max_output_bytes=settings.tool_max_output_bytes, require_approval=mcp_approval,
                              max_connections=settings.mcp_max_connections)
        # Built-in and plugin tools run in sandbox processes, where their timeout stops them.
        self.sandbox = ToolSandbox(settings.tool_processes, settings.tool_memory_mb, settings.tool_timeout_seconds,
                                   settings.tool_max_output_bytes)

        def tools(tenant: str, session_id: str) -> ToolRegistry:
            namespace = f"{tenant}/{session_id}"
            registry = add_builtins(ToolRegistry(self.sandbox), namespace, self.memory, workspace)
            for entry in plugins:
                registry.register_from(entry, namespace)
            return registry.require_approval(approval)

        tools("check", "settings")  # a wrong plugin or tool name fails at start, not at a turn
        self.sandbox.warm()
        compactor = Compactor(self.store, self.workers, Compaction(ClearToolResults(settings.compact_keep_last),
                                                                   trigger_fraction=settings.compact_at_fraction))
        self.loop = AgentLoop(self.store, self.workers, tools, jobs=self.jobs, compactor=compactor, mcp=self.mcp,
                              policy=load_policy(settings.mode_policy), operator=settings.operator_limits())
        self.metrics = AgentMetrics()
        self.webhooks = TurnWebhooks(TurnWebhookStore(db), settings.webhook_policy())
        self.runner = TurnRunner(self.loop, TurnStore(db, settings.stale_after_seconds),
                                 heartbeat_s=settings.heartbeat_seconds,
                                 max_turns_per_tenant=settings.max_turns_per_tenant, metrics=self.metrics,
                                 webhooks=self.webhooks, approval_timeout_s=settings.approval_timeout_seconds)
        api_keys = load_api_keys(settings.api_keys_file)
        rates = (TokenRates(settings.tokens_per_second_per_tenant) if settings.tokens_per_second_per_tenant
                 else None)
        if rates is not None:
            self.runner.on_turn_end = lambda tenant, usage: rates.charge(tenant, usage.get("completion_tokens", 0))
        self.servicer = AgentServicer(self.loop, self.runner, api_keys, rates, RequestBounds.of(settings))

    def dependencies(self) -> list[Dependency]:
        """What the service cannot serve without: its database (migrated when it first answers) and, when
        configured, the worker registry (every turn routes through it)."""
        def database() -> None:
            with self.db() as session:
                session.execute(text("SELECT 1"))

        found = [Dependency("database", database, prepare=lambda: upgrade(self.settings.database_url))]
        if self.settings.worker_registry:
            found.append(Dependency("worker registry", self.workers.registry.workers))
        return found

    def close(self) -> None:
        self.mcp.close()
        self.webhooks.stop()
        self.sandbox.close()
        self.workers.close()
        if self.jobs is not None:
            self.jobs.close()


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _plugin(entry: str) -> str:
    module, _, function = entry.partition(":")
    if not function:
        raise SystemExit(f"tool plugin {entry!r}: expected package.module:function")
    getattr(importlib.import_module(module), function)  # found now, not at the first turn
    return entry


def build_server(runtime: Runtime, host: str, port: int, threads: int = 32, tls: TlsFiles | None = None,
                 readiness: Readiness | None = None) -> tuple[grpc.Server, int, health.HealthServicer]:
    """The service on `host:port`. With `readiness`, its health follows it and calls are refused UNAVAILABLE until
    it is ready; without, it serves at once."""
    gate = [RefuseUntilReady(readiness)] if readiness is not None else []
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads), options=CHANNEL_OPTIONS,
                         interceptors=[*grpc_server_interceptors(), *gate])
    agent_pb2_grpc.add_AgentServiceServicer_to_server(runtime.servicer, server)
    health_servicer = add_health_and_reflection(server, SERVICE_NAME, serving=readiness is None or readiness.ready)
    if readiness is not None:
        readiness.watch(lambda ready: set_serving(health_servicer, SERVICE_NAME, ready))
    address = f"{host}:{port}"
    bound = server.add_secure_port(address, tls.credentials()) if tls else server.add_insecure_port(address)
    return server, bound, health_servicer


def run_serve(args: argparse.Namespace) -> int:
    settings = settings_from(AgentSettings, args)
    configure_tracing("dsv4-agent")
    runtime = Runtime(settings, migrate_later=True)
    readiness = Readiness("agent service", runtime.dependencies(), retry_max_s=settings.dependency_retry_max_seconds,
                          check_every_s=settings.dependency_check_seconds)
    tls = tls_files(settings)
    server, port, _ = build_server(runtime, settings.host, settings.port, settings.threads, tls, readiness)
    server.start()
    if settings.metrics_port is not None:
        serve_metrics(runtime.metrics.registry, settings.metrics_port, settings.host, "agent")
    readiness.start()  # its first round before the line below: with everything up, the line means ready
    print(f"agent service on {settings.host}:{port} (workers {settings.workers}, database "
          f"{settings.database_url.split('@')[-1]})", flush=True)
    readiness.until_signalled()
    runtime.runner.stop(grace_s=30)
    server.stop(grace=5).wait()
    runtime.close()
    return 0
