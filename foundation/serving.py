"""What every gRPC server of the platform shares: its channel options, TLS files, and health (grpc.health.v1) and
reflection. Health answers three names: the whole server ("") and the service by name flip together and say whether
it is ready (serving, its dependencies answering, not draining): a readiness probe's question. LIVENESS is SERVING
for as long as the process runs: a liveness probe's question, so a service waiting for its database is not restarted
for it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

# Million-token inputs: 1M ids are ~5 MB on the wire; exports stream in 1 MiB chunks.
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 256 << 20), ("grpc.max_send_message_length", 256 << 20),
                   ("grpc.keepalive_time_ms", 30_000), ("grpc.keepalive_timeout_ms", 10_000),
                   ("grpc.keepalive_permit_without_calls", 1), ("grpc.http2.min_ping_interval_without_data_ms", 10_000)]
LIVENESS = "liveness"


def add_health_and_reflection(server: grpc.Server, service_name: str, serving: bool) -> health.HealthServicer:
    """grpc.health.v1 for the whole server ("") and the service, and reflection: what every platform service
    answers."""
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    health_servicer.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection((service_name, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    set_serving(health_servicer, service_name, serving)
    return health_servicer


def set_serving(health_servicer: health.HealthServicer, service_name: str, serving: bool) -> None:
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ("", service_name):
        health_servicer.set(name, status)


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


def tls_files(args) -> TlsFiles | None:
    """From anything with tls_cert, tls_key and tls_client_ca (flags or settings)."""
    if not (args.tls_cert or args.tls_key or args.tls_client_ca):
        return None
    if not (args.tls_cert and args.tls_key):
        raise SystemExit("serve: TLS needs both --tls-cert and --tls-key")
    return TlsFiles(Path(args.tls_cert), Path(args.tls_key), Path(args.tls_client_ca) if args.tls_client_ca else None)
