"""TLS between the services, offline: the TLS overlays (docker-compose.tls.yml, deploy/k8s/overlays/tls) serve TLS
on every gRPC server, mutual TLS where platform services call it; each caller trusts and presents what its callee
requires, and the certificate deploy/gen_tls.py issues is accepted at the very address each caller dials (a model
worker's: the one it advertises to the registry). Proven with real gRPC servers and channels built from the overlays'
own files, and each server's health checks run over TLS against the platform's own health service: a liveness check
passes while the service waits for its dependencies, a readiness check only once it is ready."""

from __future__ import annotations

from concurrent import futures
from pathlib import Path

import grpc
import kubernetes_validate
import pytest
from deploy_commands import LIVE, PROBE_QUESTION, READY, listen, parse_python_m
from deploy_manifests import K8S, containers, k8s_documents, kustomize, load_compose, load_script
from deploy_operator import DIALS, Process, compose_processes, k8s_processes
from grpc_health.v1 import health_pb2, health_pb2_grpc

from foundation.clients.worker.policy import tls_client_options
from foundation.serving import TlsFiles, add_health_and_reflection, set_serving

K8S_VERSION = "1.31.0"
# The name a caller's settings give each gRPC server (`{name}_tls_ca`, `{name}_target`, `{name}_tls_server_name`).
CALLEE_NAME = {"model_worker": "worker", "services.jobs": "jobs", "agent_runtime": "agent"}
TLS_FILES = ("tls.crt", "tls.key", "ca.crt")
SERVICE = "dsv4.test.v1.Service"


@pytest.fixture(scope="module")
def issued(operator) -> dict[str, Path]:
    return {name: operator[0] / "deploy/secrets/tls" / name for name in TLS_FILES}


def health_server(credentials: grpc.ServerCredentials):
    """A server with the platform's health service, not ready yet (a service waiting for its dependencies)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health = add_health_and_reflection(server, SERVICE, serving=False)
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return server, port, health


def reaches(port: int, host: str, client: dict) -> bool:
    """Whether a client built with `client` (a client's TLS keyword arguments) that dialled `host` (resolved here to
    127.0.0.1) completes a health check."""
    options = dict([("grpc.ssl_target_name_override", host), *client["channel_options"]])  # the caller's name wins
    with grpc.secure_channel(f"127.0.0.1:{port}", client["credentials"], options=list(options.items())) as channel:
        try:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            return True
        except grpc.RpcError:
            return False


def test_the_health_check_speaks_tls_and_mutual_tls(issued):
    healthcheck = load_script("healthcheck")
    ca, cert, key = (str(issued[n]) for n in ("ca.crt", "tls.crt", "tls.key"))
    server, port, health = health_server(TlsFiles(Path(cert), Path(key), Path(ca)).credentials())
    set_serving(health, SERVICE, True)
    target = f"127.0.0.1:{port}"
    try:
        assert healthcheck.main(["grpc", target, "--tls-ca", ca, "--tls-cert", cert, "--tls-key", key]) == 0
        pod = "model-worker-0.model-worker-headless.default.svc"  # the wildcard a registry address needs
        assert healthcheck.main(["grpc", target, "--tls-ca", ca, "--tls-cert", cert, "--tls-key", key,
                                 "--tls-server-name", pod]) == 0
        assert healthcheck.main(["grpc", target, "--tls-ca", ca, "--tls-cert", cert, "--tls-key", key,
                                 "--tls-server-name", "elsewhere.example"]) == 1  # a name it does not carry
        assert healthcheck.main(["--timeout", "2", "grpc", target, "--tls-ca", ca]) == 1  # no client certificate
        assert healthcheck.main(["--timeout", "2", "grpc", target]) == 1  # plaintext
    finally:
        server.stop(0)
    assert load_script("gen_tls").main(["--out", str(issued["tls.key"].parent)]) == 1  # never replaces a key


def dialled_hosts(server: Process, caller: Process) -> list[str]:
    """The hosts `caller` dials to reach `server`: for model workers found in the registry, the address each
    advertises (its --advertise, else its own hostname when bound to every interface); else the addresses its
    settings name."""
    if server.module == "model_worker" and f"{caller.prefix}WORKER_REGISTRY" in caller.env:
        _, args = parse_python_m(server.argv)
        advertised = args.advertise or server.env.get("DSV4_WORKER_ADVERTISE")
        if advertised:
            return [advertised.rsplit(":", 1)[0]]
        host, _ = listen(server.module, args, server.env)
        return [server.hostname if host in ("0.0.0.0", "::") else host]
    named = [caller.env[caller.prefix + d] for d in DIALS[server.module] if caller.prefix + d in caller.env]
    return [address.rsplit(":", 1)[0] for value in named for address in value.split(",")]


def mounted(process: Process, path: str | None, scratch: Path) -> Path | None:
    """The secret file a process's setting names, written out here; None when the setting is not set."""
    if path is None:
        return None
    assert path in process.files, f"{process.name}: {path} is no mounted secret file"
    out = scratch / f"{process.name}{path}".replace("/", "_")
    out.write_text(process.files[path])
    return out


def check_probes(server: Process, probes: list[tuple[str, list[str]]], port: int, health, mutual: bool,
                 scratch: Path) -> None:
    """The server's health checks, run for real against it with its mounted files: each speaks its TLS (with a
    client certificate where it requires one); while it is not ready liveness checks pass and readiness checks
    fail, once it is all pass."""
    healthcheck = load_script("healthcheck")
    assert READY in {question for question, _ in probes}, server.name
    runs = []
    for question, argv in probes:
        assert "--tls-ca" in argv and ("--tls-cert" in argv) == mutual, (server.name, argv)
        local = [str(mounted(server, a, scratch)) if a in server.files else a for a in argv]
        local[local.index("grpc") + 1] = f"127.0.0.1:{port}"
        runs.append((question, local))
    for question, local in runs:
        assert healthcheck.main(local) == (0 if question == LIVE else 1), (server.name, question, local)
    set_serving(health, SERVICE, True)
    for _, local in runs:
        assert healthcheck.main(local) == 0, (server.name, local)


def check_tls(processes: list[Process], probes: dict[str, list[tuple[str, list[str]]]], scratch: Path) -> None:
    """Every gRPC server serves TLS, mutual TLS where platform services call it; its probes speak it; every caller
    reaches it (`check_caller`)."""
    servers = [p for p in processes if p.module in CALLEE_NAME]
    assert {p.module for p in servers} == set(CALLEE_NAME)
    for server in servers:
        callers = [p for p in processes if server.module in DIALS and p.calls(server.module)]
        mutual = bool(callers)  # the platform's own callers present certificates; end users' clients need not
        files = [mounted(server, server.env.get(server.prefix + n), scratch)
                 for n in ("TLS_CERT", "TLS_KEY", "TLS_CLIENT_CA")]
        assert files[0] and files[1] and (files[2] is not None) == mutual, server.name
        grpc_server, port, health = health_server(TlsFiles(*files).credentials())
        try:
            check_probes(server, probes[server.name], port, health, mutual, scratch)
            for caller in callers:
                check_caller(caller, server, port, mutual, scratch)
        finally:
            grpc_server.stop(0)


def check_caller(caller: Process, server: Process, port: int, mutual: bool, scratch: Path) -> None:
    """`caller`'s settings trust `server`'s CA, present a certificate where it asks for one, and complete a handshake
    at every address it dials, with a TLS server name only where the address alone would not do."""
    name = f"{caller.prefix}{CALLEE_NAME[server.module].upper()}_TLS_"
    ca, cert, key = (mounted(caller, caller.env.get(name + part), scratch) for part in ("CA", "CERT", "KEY"))
    assert ca and (cert is not None) == mutual and (key is not None) == mutual, (caller.name, server.name)
    files = (str(ca), str(cert) if cert else None, str(key) if key else None)
    server_name = caller.env.get(name + "SERVER_NAME")
    for host in dialled_hosts(server, caller):
        assert reaches(port, host, tls_client_options(*files, server_name)), (caller.name, server.name, host)
        if server_name:
            assert not reaches(port, host, tls_client_options(*files)), f"{caller.name}: {host} needs no server name"


def test_the_compose_tls_overlay(operator, tmp_path):
    root, values = operator
    files = ("docker-compose.yml", "docker-compose.tls.yml")
    compose = load_compose(*files, values=values)
    # Compose's health checks gate `depends_on: service_healthy`: readiness.
    probes = {name: [(READY, s["healthcheck"]["test"][3:])] for name, s in compose["services"].items()
              if "healthcheck" in s}
    processes = compose_processes(root, values, *files)
    assert {p.name for p in processes if p.module == "model_worker"} == {"model-worker", "model-worker-gpu"}
    check_tls(processes, probes, tmp_path)


def test_the_kubernetes_tls_overlay(k8s_secrets, tmp_path):
    docs = kustomize(K8S / "overlays" / "tls")
    probes: dict[str, list[tuple[str, list[str]]]] = {}
    for name, _, _, container in containers(docs):
        kinds = {k: container[k] for k in PROBE_QUESTION if k in container}
        if any("exec" in p for p in kinds.values()) and container["image"].startswith("dsv4"):
            assert not any("grpc" in p for p in kinds.values()), f"{name}: the kubelet's gRPC probe cannot speak TLS"
        probes[f"{name}/{container['name']}"] = [(PROBE_QUESTION[k], p["exec"]["command"][2:])
                                                 for k, p in kinds.items() if "exec" in p]
    check_tls(k8s_processes(docs, k8s_secrets), probes, tmp_path)
    base = {(d["kind"], d["metadata"]["name"]): d for _, d in k8s_documents()}
    changed = [d for _, d in docs if d != base[d["kind"], d["metadata"]["name"]]]
    assert {d["metadata"]["name"] for d in changed} == {"model-worker", "jobs", "celery-think-max", "celery-default",
                                                        "celery-beat", "agent", "gateway"}
    for doc in changed:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
