"""Reading the deployment artefacts as their tools would: compose's interpolation and override files, Kubernetes'
`$(NAME)` expansion, Secret references and kustomize's strategic merge patches; and the settings each DSV4_*
variable must name. Shared by the tests of tests/deploy."""

from __future__ import annotations

import copy
import functools
import importlib.util
import re
from pathlib import Path

import yaml

from agent_runtime.settings import AgentSettings
from model_worker.server.settings import WorkerSettings
from model_worker.sessions.codec import KEY_ENV, PREVIOUS_KEYS_ENV
from services.gateway.settings import GatewaySettings
from services.jobs.settings import JobsSettings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
SETTINGS = {"DSV4_AGENT_": AgentSettings, "DSV4_JOBS_": JobsSettings, "DSV4_GATEWAY_": GatewaySettings,
            "DSV4_WORKER_": WorkerSettings}
# Read straight from os.environ by the code (not a settings model).
DIRECT_ENV = {KEY_ENV: ROOT / "model_worker/sessions/codec.py",
              PREVIOUS_KEYS_ENV: ROOT / "model_worker/sessions/codec.py",
              "DSV4_GROUP_TIMEOUT_S": ROOT / "model_worker/parallel/launch.py"}
# Read by the libraries (the OpenTelemetry SDK; prometheus_client's multiprocess mode), not by a settings model.
OTEL_ENV = {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_SERVICE_NAME",
            "PROMETHEUS_MULTIPROC_DIR"}
# The platform's images (deploy/Dockerfile.*): the control plane's (the `control` extra, no torch) and the model
# worker's (the `worker` extra), each with the Dockerfile that builds it.
CONTROL_IMAGE, WORKER_IMAGES = "dsv4-control:cpu", ("dsv4-worker:cpu", "dsv4-worker:gpu")
PLATFORM_IMAGES = (CONTROL_IMAGE, *WORKER_IMAGES)
DOCKERFILES = {"dsv4-control:cpu": "Dockerfile.control", "dsv4-worker:cpu": "Dockerfile.worker",
               "dsv4-worker:gpu": "Dockerfile.gpu"}
# The settings prefix of each platform server module, and which of its settings a caller's key for it goes in.
MODULE_PREFIX = {"model_worker": "DSV4_WORKER_", "services.jobs": "DSV4_JOBS_", "agent_runtime": "DSV4_AGENT_",
                 "services.gateway": "DSV4_GATEWAY_"}
CALLER_KEY_SUFFIX = {"model_worker": "_WORKER_API_KEY", "services.jobs": "_JOBS_API_KEY"}


@functools.lru_cache(maxsize=None)
def _parsed(path: Path) -> tuple:
    return tuple(yaml.load_all(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))


def read_yaml(path: Path) -> list:
    """The documents of a YAML file (parsed once per run; each caller gets its own copy)."""
    return [copy.deepcopy(doc) for doc in _parsed(path) if doc is not None]


def load_script(name: str):
    """A script of deploy/ (not a package) as a module."""
    spec = importlib.util.spec_from_file_location(f"dsv4_deploy_{name}", ROOT / "deploy" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- compose ---------------------------------------------------------------------------------------------------

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def variables(text: str) -> list[tuple[str, str, str]]:
    """Every `${NAME}`, `${NAME:-default}`, `${NAME:?message}` in `text`: (name, operator, argument)."""
    return [(m.group(1), m.group(2) or "", m.group(3) or "") for m in _VARIABLE.finditer(text)]


def interpolate(text: str, values: dict[str, str] | None = None) -> str:
    """Compose's interpolation: a variable's value from `values` (the operator's .env), else its default; a
    required variable without a value is an error, as it is for compose."""
    values = values or {}

    def one(m: re.Match) -> str:
        name, operator, argument = m.group(1), m.group(2) or "", m.group(3) or ""
        if values.get(name):
            return values[name]
        if "?" in operator:
            if values:
                raise KeyError(f"required variable {name} is not set: {argument}")
            return ""
        return argument if "-" in operator else ""

    return _VARIABLE.sub(one, text)


def load_compose(*files: str, values: dict[str, str] | None = None) -> dict:
    """The compose model of `files` merged in order (`docker compose -f A -f B`); with `values`, interpolated as
    compose does it (every string of the parsed model, comments aside)."""
    merged: dict = {}
    for name in files:
        merged = merge_compose(merged, read_yaml(ROOT / name)[0])
    return merged if values is None else _interpolate_all(merged, values)


def _interpolate_all(node, values: dict[str, str]):
    if isinstance(node, dict):
        return {key: _interpolate_all(value, values) for key, value in node.items()}
    if isinstance(node, list):
        return [_interpolate_all(value, values) for value in node]
    return interpolate(node, values) if isinstance(node, str) else node


def merge_compose(base: dict, override: dict) -> dict:
    """Compose's override rules, as far as these files use them: mappings merge, `environment` by variable,
    `secrets` and `volumes` lists by entry, any other list or scalar is replaced."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_compose(out[key], value)
        elif key in ("secrets", "volumes") and isinstance(value, list) and isinstance(out.get(key), list):
            out[key] = out[key] + [v for v in value if v not in out[key]]
        else:
            out[key] = copy.deepcopy(value)
    return out


def platform_services(compose: dict) -> dict[str, dict]:
    return {name: s for name, s in compose["services"].items() if s.get("image") in PLATFORM_IMAGES}


def compose_argv(service: dict, values: dict[str, str] | None = None) -> list[str]:
    argv = [*service.get("entrypoint", []), *service["command"]]
    return [interpolate(str(a), values) for a in argv]


def server_module(argv: list[str]) -> str | None:
    """The platform server a command runs (`python -m X`, or torchrun's `-m X`), None for Celery and others."""
    if "-m" in argv and argv[argv.index("-m") + 1] in MODULE_PREFIX:
        return argv[argv.index("-m") + 1]
    return None


def redis_server_options(argv: list[str]) -> dict[str, str]:
    """`redis-server --name value ...` as {name: value}."""
    assert argv[0] == "redis-server", argv
    return {argv[i][2:]: argv[i + 1] for i in range(1, len(argv) - 1, 2)}


# ---- Kubernetes ------------------------------------------------------------------------------------------------


def k8s_documents(directory: Path = K8S) -> list[tuple[str, dict]]:
    return [(path.name, doc) for path in sorted(directory.glob("*.yaml")) if path.name != "kustomization.yaml"
            for doc in read_yaml(path)]


def pod_specs(doc: dict) -> list[dict]:
    if doc["kind"] in ("Deployment", "StatefulSet"):
        return [doc["spec"]["template"]["spec"]]
    if doc["kind"] == "LeaderWorkerSet":
        template = doc["spec"]["leaderWorkerTemplate"]
        return [template[k]["spec"] for k in ("leaderTemplate", "workerTemplate") if k in template]
    return []


def containers(docs: list[tuple[str, dict]]):
    """(file, document, pod spec, container) for every container of every workload."""
    for name, doc in docs:
        for spec in pod_specs(doc):
            for container in spec["containers"]:
                yield name, doc, spec, container


def expand(text: str, env: dict[str, str]) -> str:
    """The kubelet's `$(NAME)` expansion (an unknown name stays as written, as it does there)."""
    return re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), text)


def container_env(container: dict, config: dict[str, str], secrets: dict[str, dict[str, str]],
                  downward: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a container starts with: envFrom, then env in order, each value expanded over the ones
    before it; Secret and ConfigMap references resolved from `secrets` / `config` (a missing one raises)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert "configMapRef" in source, f"{container['name']}: envFrom a Secret hands it every key of it"
        env.update(config)
    for entry in container.get("env", []):
        source = entry.get("valueFrom")
        if source is None:
            env[entry["name"]] = expand(str(entry.get("value", "")), env)
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            env[entry["name"]] = secrets[ref["name"]][ref["key"]]
        elif "configMapKeyRef" in source:
            env[entry["name"]] = config[source["configMapKeyRef"]["key"]]
        else:
            env[entry["name"]] = (downward or {}).get(entry["name"], f"{entry['name'].lower()}-0")
    return env


def mounted_files(spec: dict, container: dict) -> dict[str, tuple[str, str]]:
    """Path in the container -> (Secret name, key) for every Secret file it mounts."""
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    files = {}
    for mount in container.get("volumeMounts", []):
        secret = volumes.get(mount["name"], {}).get("secret")  # none: a volume claim template
        if secret:
            for item in secret["items"]:
                files[f"{mount['mountPath'].rstrip('/')}/{item['path']}"] = (secret["secretName"], item["key"])
    return files


_MERGE_KEYS = {"containers": "name", "env": "name", "volumes": "name", "volumeMounts": "mountPath",
               "ports": "containerPort", "initContainers": "name"}


def strategic_merge(base, patch, key: str | None = None):
    """Kustomize's strategic merge patch, as far as the overlays use it: mappings merge, a null deletes, the lists
    above merge by their key, any other list is replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for name, value in patch.items():
            if value is None:
                out.pop(name, None)
            else:
                out[name] = strategic_merge(out.get(name), value, name)
        return out
    if isinstance(base, list) and isinstance(patch, list) and key in _MERGE_KEYS:
        merge_key, out = _MERGE_KEYS[key], copy.deepcopy(base)
        for item in patch:
            match = next((i for i, old in enumerate(out) if old.get(merge_key) == item.get(merge_key)), None)
            if match is None:
                out.append(copy.deepcopy(item))
            else:
                out[match] = strategic_merge(out[match], item, None)
        return out
    return copy.deepcopy(patch)


def kustomize(directory: Path) -> list[tuple[str, dict]]:
    """The documents `kubectl apply -k directory` would apply, for a kustomization of resources and patches."""
    kustomization = read_yaml(directory / "kustomization.yaml")[0]
    docs: list[tuple[str, dict]] = []
    for resource in kustomization.get("resources", []):
        path = (directory / resource).resolve()
        docs += kustomize(path) if path.is_dir() else [
            (path.name, d) for d in read_yaml(path)]
    for patch in kustomization.get("patches", []):
        for change in read_yaml(directory / patch["path"]):
            index = next(i for i, (_, d) in enumerate(docs) if (d["kind"], d["metadata"]["name"]) == (
                change["kind"], change["metadata"]["name"]))
            docs[index] = (docs[index][0], strategic_merge(docs[index][1], change))
    return docs
