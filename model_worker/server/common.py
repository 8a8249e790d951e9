"""What every gRPC server of the platform shares: its channel options, and health (grpc.health.v1) and reflection.
Health answers three names: the whole server ("") and the service by name flip together and say whether it is ready
(serving, its dependencies answering, not draining): a readiness probe's question. LIVENESS is SERVING for as long
as the process runs: a liveness probe's question, so a service waiting for its database is not restarted for it."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

# Million-token inputs: 1M ids are ~5 MB on the wire; exports stream in 1 MiB chunks.
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 256 << 20), ("grpc.max_send_message_length", 256 << 20),
                   ("grpc.keepalive_time_ms", 30_000), ("grpc.keepalive_timeout_ms", 10_000),
                   ("grpc.keepalive_permit_without_calls", 1), ("grpc.http2.min_ping_interval_without_data_ms", 10_000)]
LIVENESS = "liveness"


def serve_metrics(registry, port: int, host: str, what: str):
    """A service's Prometheus endpoint (`metrics_port`) on a thread; returns the HTTP server (its port is the one
    bound, for a port of 0)."""
    from prometheus_client import start_http_server

    server, _ = start_http_server(port, addr=host, registry=registry)
    print(f"{what} metrics on http://{host}:{server.server_port}/metrics", flush=True)
    return server


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
