"""`python -m model_worker serve`: one model worker on a gRPC port, with health (grpc.health.v1), reflection and
SIGTERM draining (health flips to NOT_SERVING, in-flight requests finish and commit, then the process exits)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import threading
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health

from foundation.auth import load_api_keys
from foundation.blobs.stores import BlobStore, TieredBlobs, open_tiered
from foundation.chat import load_tokenizer
from foundation.metrics import serve_metrics
from foundation.registry import Heartbeat, open_registry
from foundation.serving import CHANNEL_OPTIONS, TlsFiles, add_health_and_reflection, set_serving, tls_files
from foundation.settings import add_settings_cli, settings_from
from foundation.tracing import configure_tracing, grpc_server_interceptors
from foundation.wire import InputLimits
from model_worker.engine.replica import KEEPALIVE_S, ModelSpec, open_replica
from model_worker.server.runtime import WorkerRuntime
from model_worker.server.service import WorkerService
from model_worker.server.settings import WorkerSettings
from model_worker.sessions import BlobCodec, SessionStore
from model_worker.sessions.archive import ImportLimits
from model_worker.sessions.upkeep import StoreUpkeep, UpkeepPolicy
from protos.dsv4.worker.v1 import worker_pb2, worker_pb2_grpc

SERVICE_NAME = worker_pb2.DESCRIPTOR.services_by_name["ModelWorker"].full_name
HOUR = 3600.0

log = logging.getLogger(__name__)


def add_serve_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", help="run a model worker (gRPC)")
    add_settings_cli(p, WorkerSettings)
    p.set_defaults(func=run_serve)


def build_server(runtime: WorkerRuntime, host: str, port: int, threads: int = 32, tls: TlsFiles | None = None
                 ) -> tuple[grpc.Server, int, health.HealthServicer]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads), options=CHANNEL_OPTIONS,
                         interceptors=grpc_server_interceptors(own_spans=(f"/{SERVICE_NAME}/Generate",)))
    worker_pb2_grpc.add_ModelWorkerServicer_to_server(WorkerService(runtime), server)
    health_servicer = add_health_and_reflection(server, SERVICE_NAME, serving=False)
    address = f"{host}:{port}"
    bound = server.add_secure_port(address, tls.credentials()) if tls else server.add_insecure_port(address)
    return server, bound, health_servicer


@dataclass
class InProcessWorker:
    """A model worker serving on a port of this process (embedding, tests, benchmarks)."""

    runtime: WorkerRuntime
    address: str
    server: grpc.Server

    def stop(self) -> None:
        self.server.stop(grace=2).wait()
        self.runtime.stop()


def serve_in_process(model, blobs, *, host: str = "127.0.0.1", port: int = 0, threads: int = 8,
                     **runtime_options) -> InProcessWorker:
    """Start a worker for `model` over the session values in `blobs` (a BlobStore); SERVING once it returns."""
    runtime = WorkerRuntime(model, load_tokenizer(), SessionStore(blobs, model.fingerprint, model.layout),
                            **runtime_options)
    server, bound, health_servicer = build_server(runtime, host, port, threads)
    runtime.start()
    server.start()
    set_serving(health_servicer, SERVICE_NAME, True)
    return InProcessWorker(runtime, f"{host}:{bound}", server)


def run_serve(args: argparse.Namespace) -> int:
    settings: WorkerSettings = settings_from(WorkerSettings, args)
    upkeep_policy = _upkeep_policy(settings)  # a bad schedule is refused before the model loads
    replica = open_replica(ModelSpec(settings.checkpoint, settings.config, settings.seed, settings.numerics),
                           settings.tensor_parallel)
    if replica is None:
        return 0  # a rank other than 0 of a launcher-started replica: it followed rank 0 to the end
    model = replica.runner
    blobs = session_blobs(settings)
    # Opened sessions and prefix checkpoints restored from the store live where the model runs.
    store = SessionStore(blobs, model.fingerprint, model.layout, device=str(model.device),
                         codec=BlobCodec.from_env(),
                         tenant_quota_bytes=int(settings.tenant_quota_gb * (1 << 30)) if settings.tenant_quota_gb
                         else None)
    api_keys = load_api_keys(settings.api_keys_file)
    gib = 1 << 30
    runtime = WorkerRuntime(model, load_tokenizer(), store, model_name=settings.checkpoint or settings.config,
                            api_keys=api_keys, hot_budget_bytes=int(settings.hot_budget_gb * gib),
                            token_budget=settings.token_budget, max_running=settings.max_running,
                            max_waiting=settings.max_waiting,
                            kv_budget_bytes=int(settings.kv_budget_gb * gib) if settings.kv_budget_gb else None,
                            max_requests_per_tenant=settings.max_requests_per_tenant,
                            tokens_per_second_per_tenant=settings.tokens_per_second_per_tenant,
                            speculative=settings.speculative, constrained_decoding=settings.constrained_decoding,
                            input_limits=InputLimits.from_settings(settings),
                            import_limits=ImportLimits.from_settings(settings),
                            max_page_size=settings.list_max_page_size,
                            commit_queue_bytes=int(settings.commit_queue_gb * gib),
                            prefix_cache_bytes=int(settings.prefix_cache_gb * gib),
                            prefix_checkpoint_every=settings.prefix_checkpoint_every)
    tls = tls_files(settings)
    server, port, health_servicer = build_server(runtime, settings.host, settings.port, settings.threads, tls)
    if settings.metrics_port is not None:
        serve_metrics(runtime.metrics.registry, settings.metrics_port, settings.host, "model worker")
    configure_tracing("dsv4-model-worker", console=settings.trace_console)
    runtime.start()
    server.start()
    upkeep = StoreUpkeep(store, upkeep_policy, runtime.hot).start() if upkeep_policy else None
    heartbeat = None
    if settings.registry:
        address = settings.advertise or f"{_reachable_host(settings.host)}:{port}"
        heartbeat = Heartbeat(open_registry(settings.registry), lambda: runtime.registry_record(address),
                              settings.heartbeat_seconds).start()
    set_serving(health_servicer, SERVICE_NAME, True)
    security = "" if tls is None else " (mutual TLS)" if tls.client_ca else " (TLS)"
    print(f"model worker serving {runtime.model_name} on {settings.host}:{port}{security}", flush=True)
    stopping, rank_lost = threading.Event(), threading.Event()

    def drain(*_: object) -> None:
        set_serving(health_servicer, SERVICE_NAME, False)
        if heartbeat is not None:
            threading.Thread(target=heartbeat.stop, daemon=True).start()  # clients route elsewhere at once
        stopping.set()

    def lost(rank: int, code: int | None) -> None:
        if rank_lost.is_set():
            return
        what = f"rank {rank} of the replica exited ({code})" if rank >= 0 else "a rank of the replica is gone"
        print(f"{what}: not serving, shutting down", flush=True)
        rank_lost.set()
        drain()

    if replica.ranks is not None:
        print(f"tensor parallel over {replica.tp.size} ranks (pids {replica.ranks.pids()})", flush=True)
        replica.ranks.watch(lost)
    if replica.tp.size > 1:
        replica.runner.keep_alive(lambda reason: lost(-1, None), KEEPALIVE_S)
    signal.signal(signal.SIGTERM, drain)
    signal.signal(signal.SIGINT, drain)
    stopping.wait()
    if rank_lost.is_set():
        return _abandon(server, runtime)
    server.stop(grace=60).wait()  # refuses new calls, lets running ones finish (and commit)
    if upkeep is not None:
        upkeep.stop()
    runtime.stop()
    replica.close()
    return 0


def session_blobs(settings: WorkerSettings) -> BlobStore:
    """The cold store, with the warm Redis in front when there is one (its memory settings checked: a warm tier
    without a memory limit and an eviction policy grows until Redis or its machine fails)."""
    warm_ttl = settings.warm_ttl_hours * HOUR if settings.warm_ttl_hours else None
    blobs = open_tiered(settings.session_store, settings.warm_store, warm_ttl)
    if isinstance(blobs, TieredBlobs) and hasattr(blobs.warm, "memory_warnings"):
        for warning in blobs.warm.memory_warnings():
            log.warning("warm session tier: %s", warning)
    return blobs


def _upkeep_policy(settings: WorkerSettings) -> UpkeepPolicy | None:
    if not settings.collect_every_seconds:
        return None
    ttl = settings.session_ttl_hours * HOUR if settings.session_ttl_hours else None
    try:
        return UpkeepPolicy(settings.collect_every_seconds, ttl)
    except ValueError as exc:
        raise SystemExit(f"serve: {exc} (session_ttl_hours, collect_every_seconds)") from None


def _reachable_host(host: str) -> str:
    """The name other machines reach a worker bound to every interface by (in containers, the hostname)."""
    return socket.gethostname() if host in ("0.0.0.0", "::", "") else host


def _abandon(server: grpc.Server, runtime: WorkerRuntime) -> int:
    """A rank died: the replica cannot run a forward pass any more. Calls in flight fail (their collectives break),
    written commits stay; the process exits with an error status rather than wait on a group that cannot finish."""
    server.stop(grace=2).wait()
    stopped = threading.Thread(target=runtime.stop, daemon=True)
    stopped.start()
    stopped.join(timeout=10)
    os._exit(1)
