"""The deployment artefacts (docker-compose.yml, deploy/k8s/, deploy/Dockerfile*) checked against their schemas and
against the code: every command, flag, queue, port and DSV4_* variable they name must exist. No Docker, no cluster."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import re
import shlex
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from unittest import mock

import grpc
import jsonschema
import kubernetes_validate
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from agent_runtime.settings import AgentSettings
from model_worker.server.settings import WorkerSettings
from model_worker.sessions.cli import KEY_ENV
from services.gateway.settings import GatewaySettings
from services.jobs.settings import JobsSettings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
K8S_VERSION = "1.31.0"
SETTINGS = {"DSV4_AGENT_": AgentSettings, "DSV4_JOBS_": JobsSettings, "DSV4_GATEWAY_": GatewaySettings,
            "DSV4_WORKER_": WorkerSettings}
# Read straight from os.environ by the code (not a settings model).
DIRECT_ENV = {KEY_ENV: ROOT / "model_worker/sessions/cli.py",
              "DSV4_GROUP_TIMEOUT_S": ROOT / "model_worker/parallel/launch.py"}
# Read by the libraries (the OpenTelemetry SDK; prometheus_client's multiprocess mode), not by a settings model.
OTEL_ENV = {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_SERVICE_NAME",
            "PROMETHEUS_MULTIPROC_DIR"}
# `python -m X`: the module whose main() builds X's parser.
MAIN_MODULES = {"model_worker": "model_worker.__main__", "services.jobs": "services.jobs.cli",
                "agent_runtime": "agent_runtime.__main__", "services.gateway": "services.gateway.__main__"}
# Where each service's listening port, host and address settings come from.
PORT_ENV = {"agent_runtime": "DSV4_AGENT_", "services.gateway": "DSV4_GATEWAY_", "model_worker": "DSV4_WORKER_",
            "services.jobs": "DSV4_JOBS_"}
ADDRESS_FIELDS = ("WORKERS", "WORKER_TARGET", "JOBS_TARGET")
LWS_ENV = {"LWS_GROUP_SIZE": "2", "LWS_WORKER_INDEX": "0", "LWS_LEADER_ADDRESS": "model-worker-pro-0"}
PLATFORM_IMAGES = ("dsv4-platform:cpu", "dsv4-worker:gpu")


# ---- helpers ---------------------------------------------------------------------------------------------------


def load_healthcheck():
    spec = importlib.util.spec_from_file_location("dsv4_deploy_healthcheck", ROOT / "deploy" / "healthcheck.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser


def real_parser(module: str) -> argparse.ArgumentParser:
    """The parser the module's main() builds (captured at its parse_args call, before anything runs)."""
    main = importlib.import_module(MAIN_MODULES[module]).main

    def capture(self, *args, **kwargs):
        raise _Captured(self)

    with mock.patch.object(argparse.ArgumentParser, "parse_args", capture), pytest.raises(_Captured) as caught:
        main([])
    return caught.value.parser


def interpolate(text: str) -> str:
    """Compose's ${VAR:-default} / ${VAR} as the defaults (the shell's values are the operator's)."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-([^}]*))?\}", lambda m: m.group(1) or "", text)


def parse_python_m(argv: list[str]) -> tuple[str, argparse.Namespace]:
    assert argv[:2] == ["python", "-m"], argv
    module = argv[2]
    assert importlib.util.find_spec(f"{module}.__main__"), f"no {module}/__main__.py"
    parser = real_parser(module)
    try:
        return module, parser.parse_args(argv[3:])
    except SystemExit as exc:
        raise AssertionError(f"{shlex.join(argv)}: the real parser rejects it") from exc


def check_celery(argv: list[str]) -> str:
    """celery -A APP SUBCOMMAND [options]: the app imports, the subcommand and its options exist, the queues exist."""
    from celery import Celery
    from celery.bin.celery import celery as cli

    assert argv[0] == "celery" and argv[1] == "-A", argv
    app = importlib.import_module(argv[2]).app
    assert isinstance(app, Celery)
    command = cli.commands.get(argv[3])
    assert command is not None, f"celery has no {argv[3]!r} command"
    options = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
    rest = argv[4:]
    for token in rest:
        if token.startswith("-"):
            assert token.split("=")[0] in options, f"celery {argv[3]} has no option {token}"
    if "-Q" in rest:
        queues = {q.name for q in app.conf.task_queues}
        for name in rest[rest.index("-Q") + 1].split(","):
            assert name in queues, f"queue {name!r} is not one of {queues}"
    return argv[3]


def check_env(env: dict[str, str], context: str) -> None:
    """Every DSV4_* variable is a settings field (with a valid value) or a variable the code reads directly."""
    for name, value in env.items():
        if name in DIRECT_ENV:
            assert f'"{name}"' in DIRECT_ENV[name].read_text(), name
            continue
        prefix = next((p for p in SETTINGS if name.startswith(p)), None)
        if prefix is None:
            assert not name.startswith("DSV4_"), f"{context}: {name} is read by nothing"
            assert name in OTEL_ENV, f"{context}: {name} is not a platform setting"
            continue
        model, field = SETTINGS[prefix], name[len(prefix):].lower()
        assert field in model.model_fields, f"{context}: {name} is not a field of {model.__name__}"
        if value is not None:
            model(**{field: interpolate(str(value))})  # the value validates


def listen(module: str, args: argparse.Namespace, env: dict[str, str]) -> tuple[str, int]:
    """The host and port a platform service binds, from its flags, then its settings."""
    prefix = PORT_ENV.get(module)
    settings = SETTINGS[prefix] if prefix else None
    host, port = getattr(args, "host", None), getattr(args, "port", None)
    if prefix:
        host = host or env.get(f"{prefix}HOST") or settings.model_fields["host"].default
        port = port or int(env.get(f"{prefix}PORT") or settings.model_fields["port"].default)
    return host, port


def addresses(env: dict[str, str]) -> list[tuple[str, int]]:
    found = []
    for name, value in env.items():
        if name.startswith(tuple(SETTINGS)) and name.endswith(ADDRESS_FIELDS):
            for address in str(value).split(","):
                host, port = address.rsplit(":", 1)
                found.append((host, int(port)))
    return found


# ---- docker-compose.yml ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def platform_services(compose: dict) -> dict[str, dict]:
    return {name: s for name, s in compose["services"].items() if s.get("image") in PLATFORM_IMAGES}


def compose_argv(service: dict) -> list[str]:
    argv = [*service.get("entrypoint", []), *service["command"]]
    return [interpolate(a) for a in argv]


def test_compose_file_validates_against_the_compose_spec_schema(compose):
    schema = json.loads((Path(__file__).parent / "compose_spec.json").read_text())
    validator = jsonschema.Draft201909Validator(schema)
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(compose)]
    assert not errors, errors
    broken = {**compose, "services": {**compose["services"], "redis": {**compose["services"]["redis"], "helth": 1}}}
    assert not validator.is_valid(broken)  # the schema is strict about keys


def test_compose_has_every_service_with_health_and_volumes(compose):
    services = compose["services"]
    assert {"redis", "postgres", "otel-collector", "model-worker", "jobs", "celery-think-max", "celery-default",
            "celery-beat", "agent", "gateway"} <= set(services)
    for name in ("redis", "postgres", "model-worker", "jobs", "agent", "gateway", "celery-think-max",
                 "celery-default"):
        assert "healthcheck" in services[name], name
    assert "sessions:/sessions" in services["model-worker"]["volumes"]
    for name, service in services.items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in services, (name, dependency)
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], (name, dependency)
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/", "$")):
                assert source in compose["volumes"], (name, source)
            elif source.startswith("./"):
                assert (ROOT / source).exists(), source


def test_compose_commands_flags_ports_and_env_exist_in_the_code(compose):
    services = compose["services"]
    listening: dict[str, int] = {"redis": 6379, "postgres": 5432}
    celery_commands = set()
    for name, service in platform_services(compose).items():
        env = service.get("environment", {})
        check_env(env, name)
        argv = compose_argv(service)
        if argv[0] == "celery":
            celery_commands.add(check_celery(argv))
            continue
        module, args = parse_python_m(argv)
        host, port = listen(module, args, env)
        assert host == "0.0.0.0", f"{name} binds {host}: unreachable from other containers"
        exposed = {int(str(p).split(":")[-1]) for p in [*service.get("expose", []), *service.get("ports", [])]}
        assert port in exposed, (name, port, exposed)
        if getattr(args, "metrics_port", None):
            assert args.metrics_port in exposed
        test = service["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "/app/deploy/healthcheck.py"], test
        check = load_healthcheck().build_parser().parse_args(test[3:])
        target_port = int(check.target.rsplit(":", 1)[1]) if check.kind == "grpc" else int(
            re.match(r"https?://[^/:]+:(\d+)", check.url).group(1))
        assert target_port == port, (name, target_port, port)
        if check.kind == "http":
            assert check.url.endswith("/healthz")
        listening[name] = port
    assert celery_commands == {"worker", "beat"}
    queues = {compose_argv(s)[compose_argv(s).index("-Q") + 1] for s in services.values()
              if s.get("command", [""])[0] == "celery" and "-Q" in s["command"]}
    assert queues == {"think_max", "default"}
    for name, service in platform_services(compose).items():  # every address a service dials is a listener
        for host, port in addresses(service.get("environment", {})):
            assert listening.get(host) == port, (name, host, port)


def test_compose_healthchecks_of_celery_name_real_commands(compose):
    for name in ("celery-think-max", "celery-default"):
        test = compose["services"][name]["healthcheck"]["test"]
        argv = shlex.split(test[1].replace("$$", "$"))
        assert argv[:4] == ["celery", "-A", "services.jobs.celery_app", "inspect"]
        from celery.bin.celery import celery as cli

        assert "inspect" in cli.commands


# ---- Kubernetes ------------------------------------------------------------------------------------------------


def k8s_documents() -> list[tuple[str, dict]]:
    return [(path.name, doc) for path in sorted(K8S.glob("*.yaml")) if path.name != "kustomization.yaml"
            for doc in yaml.safe_load_all(path.read_text()) if doc]


def pod_specs(doc: dict) -> list[dict]:
    if doc["kind"] in ("Deployment", "StatefulSet"):
        return [doc["spec"]["template"]["spec"]]
    if doc["kind"] == "LeaderWorkerSet":
        template = doc["spec"]["leaderWorkerTemplate"]
        return [template[k]["spec"] for k in ("leaderTemplate", "workerTemplate") if k in template]
    return []


def test_kustomization_lists_every_manifest_but_the_lws_variant():
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(listed) == files - {"model-worker-lws.yaml"}


@pytest.mark.parametrize("name,doc", k8s_documents(), ids=lambda v: v if isinstance(v, str) else v["kind"])
def test_manifest_validates_against_kubernetes(name, doc):
    if doc["kind"] == "LeaderWorkerSet":
        # A CRD (kubernetes-sigs/lws) that kubernetes-validate has no schema for: check its shape here, and its
        # leader and worker pod templates against the core PodTemplate schema.
        assert doc["apiVersion"] == "leaderworkerset.x-k8s.io/v1"
        template = doc["spec"]["leaderWorkerTemplate"]
        assert set(doc["spec"]) <= {"replicas", "leaderWorkerTemplate", "rolloutStrategy", "startupPolicy",
                                    "networkConfig"}
        assert set(template) <= {"size", "restartPolicy", "leaderTemplate", "workerTemplate", "subGroupPolicy"}
        assert template["restartPolicy"] in ("RecreateGroupOnPodRestart", "None")
        assert isinstance(template["size"], int) and template["size"] >= 1
        for key in ("leaderTemplate", "workerTemplate"):
            kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": key.lower()},
                                          "template": template[key]}, K8S_VERSION, strict=True)
        return
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_manifests_commands_ports_probes_and_env_exist_in_the_code():
    docs = k8s_documents()
    config = {k: v for _, d in docs if d["kind"] in ("ConfigMap", "Secret") and d["metadata"]["name"].startswith(
        "dsv4") for k, v in {**d.get("data", {}), **d.get("stringData", {})}.items()}
    check_env(config, "dsv4 ConfigMap/Secret")
    services = {d["metadata"]["name"]: d for _, d in docs if d["kind"] == "Service"}
    refs = {(r["name"]) for _, d in docs for spec in pod_specs(d) for c in spec["containers"]
            for r in c.get("envFrom", []) for r in [r.get("configMapRef") or r.get("secretRef")]}
    assert refs <= {"dsv4-settings", "dsv4-secrets"}
    seen_celery, gpu_sets, listening = set(), [], {}
    for name, doc in docs:
        for spec in pod_specs(doc):
            for container in spec["containers"]:
                env = {e["name"]: e.get("value") for e in container.get("env", [])}
                if not container["image"].startswith(PLATFORM_IMAGES):
                    continue
                # The downward API (a pod's own name): only for the arguments that name it as $(NAME).
                downward = {e["name"] for e in container.get("env", []) if "fieldRef" in e.get("valueFrom", {})}
                check_env({k: v for k, v in env.items() if k not in downward}, name)
                full = {**config, **{k: v for k, v in env.items() if v is not None},
                        **{k: f"{k.lower()}-0" for k in downward}}
                argv = [*container.get("command", []), *container.get("args", [])]
                assert all(f"$({k})" in " ".join(argv) for k in downward), (name, downward)
                argv = [re.sub(r"\$\((\w+)\)", lambda m: LWS_ENV.get(m.group(1)) or full[m.group(1)], a) for a in argv]
                if argv[0] == "celery":
                    seen_celery.add(check_celery(argv))
                    continue
                if argv[0] == "torchrun":
                    from torch.distributed.run import get_args_parser

                    launcher = get_args_parser().parse_args(argv[1:])
                    assert launcher.module and launcher.training_script == "model_worker"
                    argv = ["python", "-m", "model_worker", *launcher.training_script_args]
                module, args = parse_python_m(argv)
                host, port = listen(module, args, full)
                assert host == "0.0.0.0", (name, host)
                container_ports = {p["containerPort"] for p in container.get("ports", [])}
                probes = [container.get(k) for k in ("readinessProbe", "livenessProbe", "startupProbe")]
                probes = [p for p in probes if p]
                if doc["kind"] == "LeaderWorkerSet" and spec is doc["spec"]["leaderWorkerTemplate"]["workerTemplate"][
                        "spec"]:
                    assert not probes and not container_ports & {port}, "worker ranks open no port"
                    continue
                assert port in container_ports, (name, port)
                assert probes, f"{name}: no probes"
                for probe in probes:
                    if "grpc" in probe:
                        assert probe["grpc"]["port"] == port
                    elif "httpGet" in probe:
                        assert probe["httpGet"]["port"] == port and probe["httpGet"]["path"] == "/healthz"
                    else:
                        assert probe["tcpSocket"]["port"] == port
                if module == "model_worker":
                    assert container["resources"]["limits"]["nvidia.com/gpu"] >= 1
                    gpu_sets.append(doc["kind"])
                labels = (doc["spec"].get("template") or {}).get("metadata", {}).get("labels", {})
                for service in services.values():
                    selector = service["spec"]["selector"]
                    if doc["kind"] == "LeaderWorkerSet":
                        matches = selector.get("leaderworkerset.sigs.k8s.io/name") == doc["metadata"]["name"]
                        if matches:
                            assert selector.get("leaderworkerset.sigs.k8s.io/worker-index") == "0"
                    else:
                        matches = all(labels.get(k) == v for k, v in selector.items())
                    if matches:
                        for p in service["spec"]["ports"]:
                            assert p["targetPort"] in container_ports, (service["metadata"]["name"], p)
                        if any(p["port"] == port for p in service["spec"]["ports"]):
                            listening[service["metadata"]["name"]] = port
    assert seen_celery == {"worker", "beat"}
    assert sorted(gpu_sets) == ["LeaderWorkerSet", "StatefulSet"]
    listening.update(redis=6379, postgres=5432)
    for host, port in addresses(config):
        assert listening.get(host) == port, (host, port)


def test_model_worker_statefulset_has_headless_service_and_shared_sessions():
    docs = dict(((d["kind"], d["metadata"]["name"]), d) for _, d in k8s_documents())
    sts = docs["StatefulSet", "model-worker"]
    assert docs["Service", sts["spec"]["serviceName"]]["spec"]["clusterIP"] == "None"
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    claim = volumes["sessions"]["persistentVolumeClaim"]["claimName"]
    assert "ReadWriteMany" in docs["PersistentVolumeClaim", claim]["spec"]["accessModes"]
    lws = docs["LeaderWorkerSet", "model-worker-pro"]["spec"]["leaderWorkerTemplate"]
    assert lws["restartPolicy"] == "RecreateGroupOnPodRestart"
    assert lws["leaderTemplate"]["spec"]["terminationGracePeriodSeconds"] > 60


# ---- Dockerfiles and the health check script -------------------------------------------------------------------


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
    healthcheck = load_healthcheck()

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


def test_the_checks_catch_a_wrong_flag_env_var_and_queue():
    with pytest.raises(AssertionError):
        parse_python_m(["python", "-m", "model_worker", "serve", "--no-such-flag", "1"])
    with pytest.raises(AssertionError):
        check_env({"DSV4_AGENT_NO_SUCH_SETTING": "1"}, "test")
    with pytest.raises(AssertionError):
        check_celery(["celery", "-A", "services.jobs.celery_app", "worker", "-Q", "no_such_queue"])
