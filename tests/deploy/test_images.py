"""The images (deploy/Dockerfile.*) and the health check script every compose service and Kubernetes probe runs
(deploy/healthcheck.py), checked without Docker: what they copy exists and is what their processes import, they run
as non-root, they install the extras of their floor (the control plane's image no torch), their commands parse with
the real parsers, every service runs in the image of its floor, and the script tells a serving endpoint from one
that is not."""

from __future__ import annotations

import json
import re
import threading
import tomllib
from concurrent import futures
from http.server import BaseHTTPRequestHandler, HTTPServer

import grimp
import grpc
import pytest
from deploy_commands import parse_python_m
from deploy_manifests import (
    CONTROL_IMAGE,
    DOCKERFILES,
    K8S,
    PLATFORM_IMAGES,
    ROOT,
    WORKER_IMAGES,
    compose_argv,
    containers,
    k8s_documents,
    kustomize,
    load_compose,
    load_script,
    platform_services,
    server_module,
)
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from packaging.requirements import Requirement

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
PACKAGES = ("foundation", "protos", "kernels", "model_worker", "services", "agent_runtime")
# What each image's processes run (all of each package: Celery and the tool plugins import by name, unseen by grimp).
CONTROL_CODE = ("services.gateway", "services.jobs", "services.openai_shapes", "agent_runtime")
WORKER_CODE = ("model_worker", "kernels")
CONTROL_MODULES = {"services.jobs", "services.gateway", "agent_runtime"}


def dockerfile(name: str) -> str:
    return (ROOT / "deploy" / name).read_text().replace("\\\n", " ")


def installed_extras(text: str) -> set[str]:
    """The project's extras a Dockerfile's `pip install ".[a,b]"` installs."""
    found = re.findall(r'pip install (?:-\S+ )*"?\.\[([\w,]+)\]"?', text)
    assert found, "the image does not install the project with an extra"
    return {extra for group in found for extra in group.split(",")}


def pinned(extra: str, name: str) -> str:
    """pyproject.toml's requirement string for `name` in `extra` (e.g. torch==2.13.0)."""
    for line in PROJECT["optional-dependencies"][extra]:
        if Requirement(line).name == name:
            return line
    raise AssertionError(f"{name} is not in the {extra} extra")


def imported_packages(code: tuple[str, ...]) -> set[str]:
    """The project's top-level packages that the modules under `code` need, imports made anywhere included."""
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    modules = {m for m in graph.modules if m.startswith(tuple(f"{c}." for c in code)) or m in code}
    for module in list(modules):
        modules |= graph.find_upstream_modules(module)
    return {m.split(".")[0] for m in modules}


@pytest.mark.parametrize("name", sorted(set(DOCKERFILES.values())))
def test_dockerfile_copies_what_exists_and_runs_as_non_root(name):
    text = dockerfile(name)
    copied = set()
    for line in text.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source
                copied.add(source)
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    image = re.search(rf"docker build -f deploy/{re.escape(name)} -t (\S+) \.", text).group(1)
    assert DOCKERFILES[image] == name, (name, image)
    extras = installed_extras(text)
    assert extras <= set(PROJECT["optional-dependencies"]) - {"test"}, extras
    if image == CONTROL_IMAGE:
        assert extras == {"control"}
        instructions = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
        assert not re.search(r"torch|triton|nvidia", instructions, re.I), "the control plane's image has no torch"
        needed = imported_packages(CONTROL_CODE)
        assert not needed & {"model_worker", "kernels"}, needed
    else:
        assert "worker" in extras and pinned("worker", "torch") in text
        needed = imported_packages(WORKER_CODE)
        assert not needed & {"services", "agent_runtime"}, needed
    assert needed <= copied, f"{name} copies {sorted(copied)}; its processes import {sorted(needed)}"
    assert not copied & set(PACKAGES) - needed, f"{name} copies code its processes never import"
    if name == "Dockerfile.gpu":
        assert extras == {"worker", "kernels"} and pinned("kernels", "triton") in text and "HEALTHCHECK" in text
        healthcheck = json.loads(re.search(r"HEALTHCHECK .*CMD (\[.*\])", text).group(1))
        assert healthcheck[1] == "/app/deploy/healthcheck.py" and healthcheck[3].endswith(":50051")
        entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.*\])", text, re.M).group(1))
        cmd = json.loads(re.search(r"^CMD (\[.*\])", text, re.M).group(1))
        assert parse_python_m([*entrypoint, *cmd])[1].port == 50051
    else:
        cmd = json.loads(re.search(r"^CMD (\[.*\])", text, re.M).group(1))
        module, args = parse_python_m(cmd)
        assert (module == "model_worker") == (image != CONTROL_IMAGE) and args.host == "0.0.0.0"


def _floor_image(argv: list[str]) -> tuple[str, ...]:
    """The images a platform command may run in: the control plane's for its services and Celery, the worker's for
    the model worker (also under torchrun)."""
    if argv[0] == "celery" or server_module(argv) in CONTROL_MODULES:
        return (CONTROL_IMAGE,)
    assert argv[0] == "torchrun" or server_module(argv) == "model_worker", argv
    return WORKER_IMAGES


@pytest.mark.parametrize("files", [("docker-compose.yml",), ("docker-compose.yml", "docker-compose.tls.yml")],
                         ids=lambda files: "+".join(files))
def test_every_compose_service_runs_in_the_image_of_its_floor(files):
    compose = load_compose(*files)
    services = platform_services(compose)
    assert {s["image"] for s in services.values()} == set(PLATFORM_IMAGES)
    for name, service in services.items():
        assert service["image"] in _floor_image(compose_argv(service)), name
        assert service["build"]["dockerfile"] == f"deploy/{DOCKERFILES[service['image']]}", name


@pytest.mark.parametrize("overlay", ["base", "tls"])
def test_every_kubernetes_container_runs_in_the_image_of_its_floor(overlay):
    docs = k8s_documents() if overlay == "base" else kustomize(K8S / "overlays" / "tls")
    images = set()
    for name, _, _, container in containers(docs):
        if container["image"].startswith("dsv4"):
            argv = [*container.get("command", []), *container.get("args", [])]
            assert container["image"] in _floor_image(argv), (name, container["image"])
            images.add(container["image"])
    assert images == {CONTROL_IMAGE, "dsv4-worker:gpu"}


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
