"""`python -m services.gateway --port N --worker HOST:PORT[,...] --jobs HOST:PORT --database URL`: the OpenAI-compatible
HTTP gateway (uvicorn); every flag is also a `DSV4_GATEWAY_*` setting (services/gateway/settings.py)."""

from __future__ import annotations

import argparse
import sys

from services.gateway.settings import GatewaySettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.gateway")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int, help="0: any free port (printed)")
    parser.add_argument("--worker", dest="workers", help="model worker addresses HOST:PORT[,HOST:PORT...]")
    parser.add_argument("--jobs", dest="jobs_target", help="the jobs service's gRPC address")
    parser.add_argument("--database", dest="database_url", help="SQLAlchemy URL (PostgreSQL, or sqlite:///FILE)")
    parser.add_argument("--files-dir", help="where uploaded files are kept")
    parser.add_argument("--api-keys", dest="api_keys_file", help="JSON file {key: tenant}")
    parser.add_argument("--model-name", help="the model name clients use (default: the worker's)")
    args = parser.parse_args(argv)
    settings = GatewaySettings(**{k: v for k, v in vars(args).items() if v is not None})
    return serve(settings)


def serve(settings: GatewaySettings) -> int:
    import socket

    import uvicorn

    from model_worker.server.tracing import configure_tracing
    from services.gateway.app import build, create_app

    configure_tracing("dsv4-gateway")
    app = create_app(build(settings))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.port))
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=30)
    server = uvicorn.Server(config)
    print(f"gateway on http://{settings.host}:{sock.getsockname()[1]}/v1 (workers {settings.workers})", flush=True)
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
