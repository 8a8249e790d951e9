"""`python -m model_worker serve`: one model worker on a gRPC port, with health (grpc.health.v1), reflection and
SIGTERM draining (health flips to NOT_SERVING, in-flight requests finish and commit, then the process exits)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health

from model_worker.chat import load_tokenizer
from model_worker.parallel.launch import KEEPALIVE_S, ModelSpec, open_replica
from model_worker.server.common import CHANNEL_OPTIONS, add_health_and_reflection, set_serving
from model_worker.server.runtime import WorkerRuntime
from model_worker.server.service import WorkerService
from model_worker.server.tracing import configure_tracing
from model_worker.sessions import BlobCodec, SessionStore
from model_worker.sessions.blobs import open_tiered
from model_worker.sessions.cli import KEY_ENV
from protos.dsv4.worker.v1 import worker_pb2, worker_pb2_grpc

SERVICE_NAME = worker_pb2.DESCRIPTOR.services_by_name["ModelWorker"].full_name


def add_serve_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", help="run a model worker (gRPC)")
    p.add_argument("--checkpoint", help="checkpoint directory (default: random weights of --config)")
    p.add_argument("--config", default="tiny")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--numerics", default="official", choices=["official", "reference"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=50051, help="0: any free port (printed)")
    p.add_argument("--session-store", default="sessions", help="cold tier: file://DIR, a directory, any fsspec URL, "
                   "or redis://")
    p.add_argument("--warm-store", help="warm tier in front of it, e.g. redis://127.0.0.1:6379/0")
    p.add_argument("--api-keys", help="JSON file {key: tenant}; without it every caller is the default tenant")
    p.add_argument("--hot-budget-gb", type=float, default=4.0)
    p.add_argument("--token-budget", type=int, default=512, help="tokens per engine step")
    p.add_argument("--max-running", type=int, default=64)
    p.add_argument("--max-waiting", type=int, default=1024)
    p.add_argument("--kv-budget-gb", type=float, help="admit requests while their KV state fits in this many GiB")
    p.add_argument("--max-requests-per-tenant", type=int)
    p.add_argument("--tokens-per-second-per-tenant", type=float, help="token bucket per tenant (10 s of burst)")
    p.add_argument("--speculative", action="store_true", help="MTP speculative decoding: the MTP layer drafts each "
                   "next token and the main model verifies it in the same pass (replies unchanged)")
    p.add_argument("--tensor-parallel", type=int, default=1, help="split the model over N local ranks (gloo on CPU, "
                   "NCCL on GPUs); across machines, start every rank with torch.distributed's env:// variables")
    p.add_argument("--threads", type=int, default=32, help="gRPC handler threads")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics over HTTP on this port")
    p.add_argument("--trace-console", action="store_true", help="print OpenTelemetry spans (no collector needed)")
    p.add_argument("--tls-cert", help="PEM certificate chain: serve TLS (with --tls-key)")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert")
    p.add_argument("--tls-client-ca", help="PEM CA bundle: require client certificates it signed (mutual TLS)")
    p.set_defaults(func=run_serve)


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of the server's identity and, for mutual TLS, of the CA its clients' certificates must chain to."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def credentials(self) -> grpc.ServerCredentials:
        client_ca = self.client_ca.read_bytes() if self.client_ca else None
        return grpc.ssl_server_credentials([(self.key.read_bytes(), self.cert.read_bytes())],
                                           root_certificates=client_ca, require_client_auth=client_ca is not None)


def tls_files(args: argparse.Namespace) -> TlsFiles | None:
    if not (args.tls_cert or args.tls_key or args.tls_client_ca):
        return None
    if not (args.tls_cert and args.tls_key):
        raise SystemExit("serve: TLS needs both --tls-cert and --tls-key")
    return TlsFiles(Path(args.tls_cert), Path(args.tls_key), Path(args.tls_client_ca) if args.tls_client_ca else None)


def build_server(runtime: WorkerRuntime, host: str, port: int, threads: int = 32, tls: TlsFiles | None = None
                 ) -> tuple[grpc.Server, int, health.HealthServicer]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads), options=CHANNEL_OPTIONS)
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
    replica = open_replica(ModelSpec(args.checkpoint, args.config, args.seed, args.numerics), args.tensor_parallel)
    if replica is None:
        return 0  # a rank other than 0 of a launcher-started replica: it followed rank 0 to the end
    model = replica.model
    key = os.environ.get(KEY_ENV)
    store = SessionStore(open_tiered(args.session_store, args.warm_store), model.fingerprint, model.layout,
                         codec=BlobCodec(bytes.fromhex(key)) if key else BlobCodec())
    api_keys = json.loads(Path(args.api_keys).read_text()) if args.api_keys else None
    runtime = WorkerRuntime(model, load_tokenizer(), store, model_name=args.checkpoint or args.config,
                            api_keys=api_keys, hot_budget_bytes=int(args.hot_budget_gb * (1 << 30)),
                            token_budget=args.token_budget, max_running=args.max_running,
                            max_waiting=args.max_waiting,
                            kv_budget_bytes=int(args.kv_budget_gb * (1 << 30)) if args.kv_budget_gb else None,
                            max_requests_per_tenant=args.max_requests_per_tenant,
                            tokens_per_second_per_tenant=args.tokens_per_second_per_tenant,
                            speculative=args.speculative)
    tls = tls_files(args)
    server, port, health_servicer = build_server(runtime, args.host, args.port, args.threads, tls)
    if args.metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, addr=args.host, registry=runtime.metrics.registry)
    configure_tracing("dsv4-model-worker", console=args.trace_console)
    runtime.start()
    server.start()
    set_serving(health_servicer, SERVICE_NAME, True)
    security = "" if tls is None else " (mutual TLS)" if tls.client_ca else " (TLS)"
    print(f"model worker serving {runtime.model_name} on {args.host}:{port}{security}", flush=True)
    stopping, rank_lost = threading.Event(), threading.Event()

    def drain(*_: object) -> None:
        set_serving(health_servicer, SERVICE_NAME, False)
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
        replica.model.keep_alive(lambda reason: lost(-1, None), KEEPALIVE_S)
    signal.signal(signal.SIGTERM, drain)
    signal.signal(signal.SIGINT, drain)
    stopping.wait()
    if rank_lost.is_set():
        return _abandon(server, runtime)
    server.stop(grace=60).wait()  # refuses new calls, lets running ones finish (and commit)
    runtime.stop()
    replica.close()
    return 0


def _abandon(server: grpc.Server, runtime: WorkerRuntime) -> int:
    """A rank died: the replica cannot run a forward pass any more. Calls in flight fail (their collectives break),
    written commits stay; the process exits with an error status rather than wait on a group that cannot finish."""
    server.stop(grace=2).wait()
    stopped = threading.Thread(target=runtime.stop, daemon=True)
    stopped.start()
    stopped.join(timeout=10)
    os._exit(1)
