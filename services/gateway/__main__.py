"""`python -m services.gateway --port N --worker HOST:PORT[,...] --jobs HOST:PORT --database URL`: the OpenAI-compatible
HTTP gateway (uvicorn); every flag is also a `DSV4_GATEWAY_*` setting (services/gateway/settings.py)."""

from __future__ import annotations

import argparse
import sys

from foundation.settings import add_settings_cli, settings_from
from services.gateway.settings import GatewaySettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.gateway")
    add_settings_cli(parser, GatewaySettings)
    settings = settings_from(GatewaySettings, parser.parse_args(argv))
    return serve(settings)


def serve(settings: GatewaySettings) -> int:
    import socket

    import uvicorn

    from foundation.tracing import configure_tracing
    from services.gateway.app import build, create_app

    configure_tracing("dsv4-gateway")
    app = create_app(build(settings))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.port))
    sock.listen(2048)  # from the line below on, connections wait in the backlog until the app has started
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=30)
    server = uvicorn.Server(config)
    print(f"gateway on http://{settings.host}:{sock.getsockname()[1]}/v1 (workers {settings.workers})", flush=True)
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
