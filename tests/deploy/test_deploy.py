"""The deployment artefacts (docker-compose.yml and its TLS override, deploy/k8s/ and its TLS overlay) checked
against their schemas and against the code: every command, flag, queue, port, probe and DSV4_* variable they name
must exist, and every probe asks the question its kind is for (readiness: gRPC health's default name, the gateway's
/readyz; liveness: gRPC health's `liveness`, /livez). No Docker, no cluster."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from deploy_commands import (
    HTTP_PATH,
    LIVE,
    PROBE_QUESTION,
    READY,
    addresses,
    asks,
    check_celery,
    check_env,
    check_probe,
    listen,
    parse_python_m,
)
from deploy_manifests import (
    K8S,
    PLATFORM_IMAGES,
    ROOT,
    compose_argv,
    container_env,
    containers,
    expand,
    k8s_documents,
    kustomize,
    load_compose,
    load_script,
    platform_services,
)

K8S_VERSION = "1.31.0"
# The workloads whose probes include a liveness probe.
LIVE_PROBED = {"agent", "jobs", "gateway", "model-worker"}
LWS_ENV = {"LWS_GROUP_SIZE": "2", "LWS_WORKER_INDEX": "0", "LWS_LEADER_ADDRESS": "model-worker-pro-0"}


# ---- docker-compose.yml ----------------------------------------------------------------------------------------


COMPOSE_FILES = [("docker-compose.yml",), ("docker-compose.yml", "docker-compose.tls.yml")]


@pytest.fixture(scope="module", params=COMPOSE_FILES, ids=lambda files: "+".join(files))
def compose(request) -> dict:
    """The compose model as written (`${...}` uninterpolated), alone and with the TLS override."""
    return load_compose(*request.param)


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
    listening: dict[str, int] = {"redis": 6379, "redis-warm": 6379, "postgres": 5432}
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
        check = load_script("healthcheck").build_parser().parse_args(test[3:])
        target_port = int(check.target.rsplit(":", 1)[1]) if check.kind == "grpc" else int(
            re.match(r"https?://[^/:]+:(\d+)", check.url).group(1))
        assert target_port == port, (name, target_port, port)
        assert asks(check) == READY, (name, test)
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


class AnySecret(dict):
    """Any value for each key of any Secret: these checks are about names; tests/deploy/test_secrets.py checks the
    values the documented commands create."""

    def __missing__(self, name: str) -> dict[str, str]:
        return _AnyKeys(name)


class _AnyKeys(dict):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def __missing__(self, key: str) -> str:
        return f"{self.name}-{key}".lower()


def composed_from_secrets(container: dict) -> set[str]:
    """The variables a container takes from a Secret only to compose others (`$(NAME)` in a later value or in its
    arguments), which no code reads by name."""
    text = " ".join([*container.get("args", []), *(str(e.get("value", "")) for e in container.get("env", []))])
    return {e["name"] for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})
            and f"$({e['name']})" in text and not e["name"].startswith("DSV4_")}


@pytest.fixture(scope="module", params=["base", "tls"])
def manifests(request) -> list[tuple[str, dict]]:
    """deploy/k8s's manifests (the LWS variant included), and what the TLS overlay applies."""
    return k8s_documents() if request.param == "base" else kustomize(K8S / "overlays" / "tls")


def test_manifests_commands_ports_probes_and_env_exist_in_the_code(manifests):
    docs = manifests
    config = {k: v for _, d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "dsv4-settings"
              for k, v in d["data"].items()}
    check_env(config, "dsv4-settings")
    services = {d["metadata"]["name"]: d for _, d in docs if d["kind"] == "Service"}
    seen_celery, gpu_sets, listening = set(), [], {}
    for name, doc, spec, container in containers(docs):
        if not container["image"].startswith(PLATFORM_IMAGES):
            continue
        # The downward API (a pod's own name): only for the arguments and values that name it as $(NAME).
        downward = {e["name"] for e in container.get("env", []) if "fieldRef" in e.get("valueFrom", {})}
        inputs = composed_from_secrets(container)
        full = container_env(container, config, AnySecret(), {k: f"{k.lower()}-0" for k in downward})
        check_env({k: v for k, v in full.items() if k not in downward | inputs}, name)
        argv = [*container.get("command", []), *container.get("args", [])]
        text = " ".join([*argv, *(str(e.get("value", "")) for e in container.get("env", []))])
        assert all(f"$({k})" in text for k in downward), (name, downward)
        argv = [expand(a, {**full, **LWS_ENV}) for a in argv]
        assert not any("$(" in a for a in argv), (name, argv)
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
        probes = {k: container[k] for k in PROBE_QUESTION if k in container}
        if doc["kind"] == "LeaderWorkerSet" and spec is doc["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]:
            assert not probes and not container_ports & {port}, "worker ranks open no port"
            continue
        assert port in container_ports, (name, port)
        assert "readinessProbe" in probes, f"{name}: no readiness probe"
        if doc["metadata"]["name"] in LIVE_PROBED:
            assert "livenessProbe" in probes, f"{name}: no liveness probe"
        for kind, probe in probes.items():
            check_probe(probe, port, PROBE_QUESTION[kind])
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
    kinds = {d["kind"] for _, d in docs}
    assert sorted(gpu_sets) == sorted({"LeaderWorkerSet", "StatefulSet"} & kinds)
    listening.update({"redis": 6379, "redis-warm": 6379, "postgres": 5432})
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


def test_the_probes_ask_what_the_services_answer(tmp_path):
    """The gateway serves both probe paths. (The gRPC services' health names are run for real, live and not ready
    while a service waits for its dependencies, by tests/deploy/test_deploy_tls.py.)"""
    from services.gateway.app import build, create_app
    from services.gateway.settings import GatewaySettings

    gateway = build(GatewaySettings(database_url=f"sqlite:///{tmp_path}/gateway.db", files_dir=str(tmp_path / "f")))
    assert set(HTTP_PATH.values()) <= {getattr(route, "path", None) for route in create_app(gateway).routes}


def test_the_checks_catch_a_wrong_flag_env_var_and_queue():
    with pytest.raises(AssertionError):
        parse_python_m(["python", "-m", "model_worker", "serve", "--no-such-flag", "1"])
    with pytest.raises(AssertionError):
        check_env({"DSV4_AGENT_NO_SUCH_SETTING": "1"}, "test")
    with pytest.raises(AssertionError):
        check_celery(["celery", "-A", "services.jobs.celery_app", "worker", "-Q", "no_such_queue"])
    with pytest.raises(AssertionError):
        check_probe({"tcpSocket": {"port": 8000}}, 8000, LIVE)  # a connect asks no question
    with pytest.raises(AssertionError):
        check_probe({"grpc": {"port": 50051}}, 50051, LIVE)  # readiness, where a failure restarts the container
    with pytest.raises(AssertionError):
        check_probe({"httpGet": {"path": "/livez", "port": 8000}}, 8000, READY)
