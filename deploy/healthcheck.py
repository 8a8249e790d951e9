"""Container health check for compose and Kubernetes exec probes: exit 0 when the endpoint is healthy, 1 otherwise.

    python deploy/healthcheck.py grpc HOST:PORT [--service NAME]   # grpc.health.v1 Check: SERVING
    python deploy/healthcheck.py http URL                          # any 2xx answer

The platform's gRPC services answer readiness under the default name (NOT_SERVING while they wait for their
dependencies or drain) and liveness under `--service liveness` (SERVING while the process runs); the gateway answers
them at /readyz and /livez.

A service serving TLS is checked over TLS: `--tls-ca` (and, under mutual TLS, `--tls-cert`/`--tls-key`, the
service's own certificate when it may act as a client); `--tls-server-name` when the certificate does not name the
address dialled (Kubernetes' native gRPC probes cannot speak TLS, hence this script as an exec probe there).
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request


def grpc_channel(target: str, ca: str | None = None, cert: str | None = None, key: str | None = None,
                 server_name: str | None = None):
    import grpc

    if ca is None:
        return grpc.insecure_channel(target)
    credentials = grpc.ssl_channel_credentials(root_certificates=_read(ca), private_key=_read(key),
                                               certificate_chain=_read(cert))
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    return grpc.secure_channel(target, credentials, options=options)


def _read(path: str | None) -> bytes | None:
    if not path:
        return None
    with open(path, "rb") as pem:
        return pem.read()


def grpc_serving(target: str, service: str = "", timeout: float = 3.0, **tls: str | None) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc_channel(target, **tls) as channel:
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
    grpc_check.add_argument("--tls-ca", help="PEM CA bundle: connect over TLS, trusting it")
    grpc_check.add_argument("--tls-cert", help="PEM client certificate chain (mutual TLS)")
    grpc_check.add_argument("--tls-key", help="PEM private key of --tls-cert")
    grpc_check.add_argument("--tls-server-name", help="the name the server's certificate must carry (default: the "
                            "target's host)")
    http_check = kinds.add_parser("http", help="HTTP GET, healthy on 2xx")
    http_check.add_argument("url")
    parser.add_argument("--timeout", type=float, default=3.0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.kind == "grpc":
        healthy = grpc_serving(args.target, args.service, args.timeout, ca=args.tls_ca, cert=args.tls_cert,
                               key=args.tls_key, server_name=args.tls_server_name)
    else:
        healthy = http_ok(args.url, args.timeout)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
