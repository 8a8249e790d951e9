"""The Prometheus endpoint every service starts: its registry served over HTTP on a thread."""

from __future__ import annotations


def serve_metrics(registry, port: int, host: str, what: str):
    """A service's Prometheus endpoint (`metrics_port`) on a thread; returns the HTTP server (its port is the one
    bound, for a port of 0)."""
    from prometheus_client import start_http_server

    server, _ = start_http_server(port, addr=host, registry=registry)
    print(f"{what} metrics on http://{host}:{server.server_port}/metrics", flush=True)
    return server
