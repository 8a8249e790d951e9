"""The images (deploy/Dockerfile*) and the health check script every compose service and Kubernetes probe runs
(deploy/healthcheck.py), checked without Docker: what they copy exists, they run as non-root, their commands parse
with the real parsers, and the script tells a serving endpoint from one that is not."""

from __future__ import annotations

import json
import re
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, HTTPServer

import grpc
import pytest
from deploy_commands import parse_python_m
from deploy_manifests import ROOT, load_script
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.gpu"])
def test_dockerfile_copies_what_exists_and_runs_as_non_root(dockerfile):
    text = (ROOT / "deploy" / dockerfile).read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert "torch==2.13.0" in text
    if dockerfile == "Dockerfile.gpu":
        assert "triton==3.9.0" in text and "HEALTHCHECK" in text
        healthcheck = json.loads(re.search(r"HEALTHCHECK .*CMD (\[.*\])", text).group(1))
        assert healthcheck[1] == "/app/deploy/healthcheck.py" and healthcheck[3].endswith(":50051")
        cmd = json.loads(re.search(r"^CMD (\[.*\])", text, re.M).group(1))
        assert parse_python_m(["python", "-m", "model_worker", *cmd])[1].port == 50051


def test_healthcheck_script_checks_grpc_health_and_http():
    healthcheck = load_script("healthcheck")

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert healthcheck.main(["grpc", f"127.0.0.1:{port}"]) == 1
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        assert healthcheck.main(["grpc", f"127.0.0.1:{port}"]) == 0
        assert healthcheck.main(["grpc", f"127.0.0.1:{port}", "--service", "unknown"]) == 1
    finally:
        server.stop(0)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_response(200 if self.path == "/healthz" else 503)
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{httpd.server_address[1]}"
        assert healthcheck.main(["http", f"{base}/healthz"]) == 0
        assert healthcheck.main(["http", f"{base}/other"]) == 1
    finally:
        httpd.shutdown()
    assert healthcheck.main(["--timeout", "0.5", "grpc", "127.0.0.1:1"]) == 1
