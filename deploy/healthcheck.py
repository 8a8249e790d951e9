"""Container health check for compose and Kubernetes exec probes: exit 0 when the endpoint is healthy, 1 otherwise.

    python deploy/healthcheck.py grpc HOST:PORT [--service NAME]   # grpc.health.v1 Check: SERVING
    python deploy/healthcheck.py http URL                          # any 2xx answer
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request


def grpc_serving(target: str, service: str = "", timeout: float = 3.0) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                              timeout=timeout)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def http_ok(url: str, timeout: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return 200 <= reply.status < 300
    except (urllib.error.URLError, OSError):
        return False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="healthcheck.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = parser.add_subparsers(dest="kind", required=True)
    grpc_check = kinds.add_parser("grpc", help="grpc.health.v1 Check")
    grpc_check.add_argument("target", help="HOST:PORT")
    grpc_check.add_argument("--service", default="", help="service name (default: the whole server)")
    http_check = kinds.add_parser("http", help="HTTP GET, healthy on 2xx")
    http_check.add_argument("url")
    parser.add_argument("--timeout", type=float, default=3.0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    healthy = grpc_serving(args.target, args.service, args.timeout) if args.kind == "grpc" else \
        http_ok(args.url, args.timeout)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
