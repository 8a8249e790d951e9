"""The platform as an operator deploys it: the secrets made by deploy/gen_secrets.py and deploy/gen_tls.py, the
Secrets the kubectl commands of docs/operations.md create from them, and each deployed platform process with its
resolved environment and the secret files it can read (from compose, or from the manifests)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from deploy_manifests import (
    MODULE_PREFIX,
    PLATFORM_IMAGES,
    SETTINGS,
    compose_argv,
    container_env,
    containers,
    expand,
    load_compose,
    load_script,
    mounted_files,
    platform_services,
    redis_server_options,
    server_module,
)

# ---- the documented kubectl commands ---------------------------------------------------------------------------


def documented_secrets(doc: Path, files_root: Path) -> dict[str, dict[str, str]]:
    """The Secrets the `kubectl create secret generic` commands of `doc`'s bash blocks create, their files read
    under `files_root` (where deploy/gen_secrets.py and deploy/gen_tls.py wrote them)."""
    blocks = re.findall(r"^```bash\n(.*?)^```", doc.read_text(), flags=re.M | re.S)
    created = {}
    for line in re.sub(r"\\\n\s*", " ", "".join(blocks)).splitlines():
        if not line.startswith("kubectl create secret generic "):
            continue
        argv = shlex.split(line, comments=True)
        data: dict[str, str] = {}
        for arg in argv[5:]:
            if arg.startswith("--from-env-file="):
                env_file = files_root / arg.split("=", 1)[1]
                data.update(load_script("gen_secrets").read_env(env_file))
            elif arg.startswith("--from-file="):
                source = arg.split("=", 1)[1]
                key, path = source.split("=", 1) if "=" in source else (Path(source).name, source)
                data[key] = (files_root / path).read_text()
        created[argv[4]] = data
    return created


def generate_secrets(root: Path) -> dict[str, str]:
    """What an operator runs first (docs/operations.md, "Secrets"), under `root` as the checkout: the env file, the
    key tables and the TLS files. Returns the env file's values."""
    gen_secrets = load_script("gen_secrets")
    assert gen_secrets.main(["--env-file", str(root / ".env"), "--tables-dir", str(root / "deploy/secrets")]) == 0
    assert load_script("gen_tls").main(["--out", str(root / "deploy/secrets/tls")]) == 0
    return gen_secrets.read_env(root / ".env")


def operator_path(path: str, root: Path) -> Path:
    """A compose file's path (relative to the repository) in the operator's checkout at `root`."""
    return root / path.removeprefix("./")


# ---- the platform's processes, as deployed ---------------------------------------------------------------------

# What a container's hostname is when compose is not told one: its ID, which no certificate can name.
COMPOSE_CONTAINER_ID = "3f9a2c61d0be"
# What a caller's settings name to reach each callee (then its *_WORKER_API_KEY / *_JOBS_API_KEY must be set).
DIALS = {"model_worker": ("WORKERS", "WORKER_TARGET", "WORKER_REGISTRY"), "services.jobs": ("JOBS_TARGET",)}


@dataclass
class Process:
    """One deployed platform process: what it runs, its environment and the secret files it can read."""

    name: str
    module: str | None
    env: dict[str, str]
    files: dict[str, str]
    prefix: str  # of the settings it reads (a Celery worker's: the jobs service's)
    argv: list[str] = field(default_factory=list)  # its command line, variables expanded
    hostname: str = ""  # the name its container knows itself by (a worker advertises it when bound to 0.0.0.0)

    def calls(self, callee: str) -> bool:
        """Whether its settings name the `callee` server module's address (never its own kind)."""
        return MODULE_PREFIX[callee] != self.prefix and any(self.prefix + d in self.env for d in DIALS[callee])


def compose_processes(root: Path, values: dict[str, str], *files: str) -> list[Process]:
    """The platform's processes in the compose model of `files` (default: docker-compose.yml alone), with the
    operator's values and secret files under `root`."""
    compose = load_compose(*(files or ("docker-compose.yml",)), values=values)
    return [Process(name, server_module(compose_argv(service)), {k: str(v) for k, v in service["environment"].items()},
                    {f"/run/secrets/{s}": operator_path(compose["secrets"][s]["file"], root).read_text()
                     for s in service.get("secrets", [])}, settings_prefix(service["environment"]),
                    compose_argv(service), service.get("hostname", COMPOSE_CONTAINER_ID))
            for name, service in platform_services(compose).items()]


def k8s_processes(docs, secrets, namespace: str = "default") -> list[Process]:
    """The platform's processes in `docs`, with the Secrets' values (worker ranks that serve nothing aside), each the
    first pod of its workload in `namespace` (the downward API's values)."""
    config = next(d["data"] for _, d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "dsv4-settings")
    processes = []
    for name, doc, spec, container in containers(docs):
        if not container["image"].startswith(PLATFORM_IMAGES):
            continue
        if doc["kind"] == "LeaderWorkerSet" and spec is doc["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]:
            continue  # a worker rank: it follows rank 0 and serves nothing
        pod = f"{doc['metadata']['name']}-0"
        env = container_env(container, config, secrets, {"POD_NAME": pod, "POD_NAMESPACE": namespace})
        argv = [expand(a, env) for a in [*container.get("command", []), *container.get("args", [])]]
        files = {path: secrets[secret][key] for path, (secret, key) in mounted_files(spec, container).items()}
        own = settings_prefix([e["name"] for e in container["env"]])  # not the shared ConfigMap's
        processes.append(Process(f"{name}/{container['name']}", server_module(argv), env, files, own, argv, pod))
    return processes


def settings_prefix(names) -> str:
    prefixes = {p for p in SETTINGS for name in names if name.startswith(p)}
    assert len(prefixes) == 1, prefixes
    return prefixes.pop()


def redis_servers_compose(values: dict[str, str]) -> dict[str, dict[str, str]]:
    """Each Redis server of the compose file: its `redis-server` options, with the operator's values."""
    compose = load_compose("docker-compose.yml", values=values)
    return {name: redis_server_options(service["command"]) for name, service in compose["services"].items()
            if service.get("command", [""])[0] == "redis-server"}


def redis_servers_k8s(docs, secrets) -> dict[str, dict[str, str]]:
    """Each Redis server of the manifests (by its workload's name, which is its Service's): its options."""
    servers = {}
    for _, doc, _, container in containers(docs):
        if container["image"].startswith("redis:"):
            env = container_env(container, {}, secrets)
            servers[doc["metadata"]["name"]] = redis_server_options([expand(a, env) for a in container["args"]])
    return servers
