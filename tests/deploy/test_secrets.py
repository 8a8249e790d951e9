"""Secure deployment defaults, offline: no default or literal secret anywhere; every Redis URL carries the password
its server requires; published ports on loopback unless asked; every service that authenticates callers has a key
table from a secret, and every caller's key is a service key in its callee's table; the warm tier on a Redis of its
own that evicts, the broker's never; the session key from a secret. Checked against what deploy/gen_secrets.py
makes and what the kubectl commands in docs/operations.md create from it, as an operator would run them."""

from __future__ import annotations

import ipaddress
import json
import re
from urllib.parse import urlsplit

import pytest
import yaml
from deploy_manifests import (
    CALLER_KEY_SUFFIX,
    K8S,
    MODULE_PREFIX,
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
    mounted_files,
    platform_services,
    server_module,
    variables,
)
from deploy_operator import (
    Process,
    compose_processes,
    k8s_processes,
    redis_servers_compose,
    redis_servers_k8s,
)

from foundation.auth import Forbidden, parse_api_keys, tenant_for
from foundation.tenancy import TENANT_HEADER
from model_worker.sessions.codec import BlobCodec

SECRET_ENV = load_script("gen_secrets").SECRET_ENV
SECRET_NAME = re.compile(r"PASSWORD|_SECRET$|TOKEN|_KEY$|_AUTH$")
DEPLOY_FILES = [ROOT / "docker-compose.yml", ROOT / "docker-compose.tls.yml", *sorted(K8S.rglob("*.yaml"))]
_URL_PASSWORD = re.compile(r"\b[a-z][a-z0-9+.-]*://[^:/@\s\"]*:(\$\{[^}]*\}|[^@\s\"/]+)@")


def redis_urls(process: Process) -> dict[str, str]:
    return {name: value for name, value in process.env.items() if value.startswith(("redis://", "rediss://"))}


def secret_defaults(text: str) -> list[str]:
    """Where a file gives a secret a value of its own: a default for a secret's variable, a password written into
    a URL, a placeholder."""
    found = [f"${{{name}{op}{arg}}}" for name, op, arg in variables(text)
             if (name in SECRET_ENV or SECRET_NAME.search(name)) and op != ":?"]
    found += [m.group(0) for m in _URL_PASSWORD.finditer(text)
              if not re.fullmatch(r"\$\{\w+:\?[^}]*\}|\$\(\w+\)", m.group(1))]
    return found + re.findall(r"change-?me", text, flags=re.I)


# ---- no default, no literal --------------------------------------------------------------------------------------


def test_the_scan_finds_defaults_literals_and_placeholders():
    assert secret_defaults("POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:-dsv4}")
    assert secret_defaults("url: postgresql+psycopg://dsv4:hunter2@postgres:5432/dsv4")
    assert secret_defaults('url: "redis://:${REDIS_PASSWORD}@redis:6379/1"')  # optional: empty when unset
    assert secret_defaults("POSTGRES_PASSWORD: change-me")
    assert not secret_defaults("url: redis://:${REDIS_PASSWORD:?run deploy/gen_secrets.py}@redis:6379/1")
    assert not secret_defaults("value: postgresql+psycopg://dsv4:$(POSTGRES_PASSWORD)@postgres:5432/dsv4")


@pytest.mark.parametrize("path", DEPLOY_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_file_gives_a_secret_a_default_or_a_value(path):
    assert not secret_defaults(path.read_text()), path


def test_compose_takes_every_secret_from_the_operator():
    compose = load_compose("docker-compose.yml", "docker-compose.tls.yml")
    for name, service in compose["services"].items():
        for variable, value in (service.get("environment") or {}).items():
            if not SECRET_NAME.search(variable):
                continue
            required = re.fullmatch(r"\$\{(\w+):\?[^}]*\}", str(value))
            mounted = str(value).removeprefix("/run/secrets/") in service.get("secrets", [])
            assert (required and required.group(1) in SECRET_ENV) or mounted, (name, variable, value)


@pytest.mark.parametrize("overlay", ["base", "tls"])
def test_manifests_hold_no_secret_and_reference_only_documented_ones(overlay, k8s_secrets):
    docs = k8s_documents() if overlay == "base" else kustomize(K8S / "overlays" / "tls")
    assert not [d["metadata"]["name"] for _, d in docs if d["kind"] == "Secret"], "the operator creates Secrets"
    for name, _, spec, container in containers(docs):
        files = mounted_files(spec, container)
        for entry in container.get("env", []):
            if not SECRET_NAME.search(entry["name"]):
                continue
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            assert ref or entry.get("value") in files, (name, entry)
            if ref:
                assert not ref.get("optional") and ref["key"] in k8s_secrets[ref["name"]], (name, ref)
        for path, (secret, key) in files.items():
            assert key in k8s_secrets[secret], (name, path, secret, key)


def test_no_command_line_carries_a_url_with_a_password(operator, k8s_secrets):
    """Any process of the machine or node can read another's command line: URLs with passwords live in the
    environment (the Redis servers' own --requirepass aside: Redis overwrites its command line as it starts)."""
    compose = load_compose("docker-compose.yml", "docker-compose.tls.yml", values=operator[1])
    argvs = [compose_argv(s) for s in platform_services(compose).values()]
    docs = k8s_documents()
    config = next(d["data"] for _, d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "dsv4-settings")
    argvs += [[expand(a, container_env(c, config, k8s_secrets)) for a in [*c.get("command", []), *c.get("args", [])]]
              for _, _, _, c in containers(docs) if c["image"].startswith(PLATFORM_IMAGES)]
    assert len(argvs) >= 10
    for argv in argvs:
        assert not [a for a in argv if _URL_PASSWORD.search(a) or a.startswith("redis")], argv


# ---- Redis -------------------------------------------------------------------------------------------------------


def check_redis_urls(processes: list[Process], servers: dict[str, dict[str, str]]) -> None:
    urls = [(p.name, setting, url) for p in processes for setting, url in redis_urls(p).items()]
    assert len(urls) >= 6, urls
    for name, setting, url in urls:
        parts = urlsplit(url)
        assert parts.hostname in servers, (name, setting, parts.hostname)
        assert parts.password and parts.password == servers[parts.hostname]["requirepass"], (name, setting)


def test_every_redis_url_in_compose_carries_its_servers_password(operator):
    check_redis_urls(compose_processes(*operator), redis_servers_compose(operator[1]))


def test_every_redis_url_in_the_manifests_carries_its_servers_password(k8s_secrets):
    docs = k8s_documents()
    check_redis_urls(k8s_processes(docs, k8s_secrets), redis_servers_k8s(docs, k8s_secrets))


def check_warm_tier(processes: list[Process], servers: dict[str, dict[str, str]]) -> None:
    workers = [p for p in processes if p.module == "model_worker"]
    assert workers
    for worker in workers:
        warm = urlsplit(worker.env["DSV4_WORKER_WARM_STORE"]).hostname
        durable = {urlsplit(url).hostname for p in processes for s, url in redis_urls(p).items()
                   if not s.endswith("WARM_STORE")}
        assert warm not in durable, "the warm tier evicts: it must not share a Redis with the broker or registry"
        options = servers[warm]
        assert options["maxmemory-policy"] == "allkeys-lru"
        assert int(re.fullmatch(r"(\d+)[kmg]?b?", options["maxmemory"].lower()).group(1)) > 0
        assert options["save"] == "" and options["appendonly"] == "no"
        for host in durable:
            assert servers[host]["maxmemory-policy"] == "noeviction" and servers[host]["appendonly"] == "yes"


def test_the_warm_tier_has_its_own_evicting_redis_in_compose(operator):
    check_warm_tier(compose_processes(*operator), redis_servers_compose(operator[1]))
    default = load_compose("docker-compose.yml")["services"]["redis-warm"]["command"]
    assert "${REDIS_WARM_MAXMEMORY:-2gb}" in default


def test_the_warm_tier_has_its_own_evicting_redis_in_the_manifests(k8s_secrets):
    docs = k8s_documents()
    check_warm_tier(k8s_processes(docs, k8s_secrets), redis_servers_k8s(docs, k8s_secrets))


# ---- published ports ---------------------------------------------------------------------------------------------


def test_compose_publishes_ports_on_loopback_unless_asked():
    published = 0
    for name, service in load_compose("docker-compose.yml", "docker-compose.tls.yml")["services"].items():
        for port in service.get("ports", []):
            bound = re.fullmatch(r"\$\{(\w+_BIND):-([^}]+)\}:(\d+):(\d+)", str(port))
            assert bound, f"{name}: {port} must be ${{NAME_BIND:-127.0.0.1}}:HOST:CONTAINER"
            assert ipaddress.ip_address(bound.group(2)).is_loopback, (name, port)
            published += 1
    assert published >= 1
    assert not re.fullmatch(r"\$\{(\w+_BIND):-([^}]+)\}:(\d+):(\d+)", "8000:8000")


@pytest.mark.parametrize("overlay", ["base", "tls"])
def test_manifests_expose_nothing_outside_the_cluster(overlay):
    docs = k8s_documents() if overlay == "base" else kustomize(K8S / "overlays" / "tls")
    for _, doc in docs:
        if doc["kind"] == "Service":
            assert doc["spec"].get("type", "ClusterIP") == "ClusterIP", doc["metadata"]["name"]
    for name, _, spec, container in containers(docs):
        assert not spec.get("hostNetwork") and not any("hostPort" in p for p in container.get("ports", [])), name


# ---- API keys ----------------------------------------------------------------------------------------------------


def check_keys(processes: list[Process]) -> None:
    """Every server reads a key table from a mounted secret; every caller sends a key that its callee's table holds
    as a service key (so it may act for the end user a call names), and nothing else does."""
    tables: dict[str, list] = {}
    for p in processes:
        if p.module is not None:
            path = p.env.get(MODULE_PREFIX[p.module] + "API_KEYS_FILE")
            assert path in p.files, f"{p.name}: its key table must be a mounted secret, not {path}"
            tables.setdefault(p.module, []).append(parse_api_keys(json.loads(p.files[path])))
    assert set(tables) == set(MODULE_PREFIX), "every kind of server authenticates its callers"
    calls = 0
    for p in processes:
        for callee, suffix in CALLER_KEY_SUFFIX.items():
            if not p.calls(callee):
                continue
            key = p.env.get(p.prefix + suffix.lstrip("_"))
            assert key, f"{p.name} calls {callee} without {p.prefix}{suffix.lstrip('_')}"
            for table in tables[callee]:
                assert tenant_for({"authorization": f"Bearer {key}", TENANT_HEADER: "end-user"}, table) == "end-user"
            calls += 1
    assert calls >= 5, calls
    gateway = tables["services.gateway"][0]
    user_key, tenant = next((key, grant.tenant) for key, grant in gateway.items() if not grant.service)
    with pytest.raises(Forbidden):  # an end user's key acts for its own tenant only
        tenant_for({"authorization": f"Bearer {user_key}", TENANT_HEADER: tenant + "-other"}, gateway)


def test_compose_services_authenticate_and_callers_send_service_keys(operator):
    check_keys(compose_processes(*operator))


def test_manifests_services_authenticate_and_callers_send_service_keys(k8s_secrets):
    check_keys(k8s_processes(k8s_documents(), k8s_secrets))


# ---- the session store's key ------------------------------------------------------------------------------------


def check_session_key(processes: list[Process]) -> None:
    workers = [p for p in processes if p.module == "model_worker"]
    assert workers
    for worker in workers:
        codec, plain = BlobCodec(bytes.fromhex(worker.env["DSV4_SESSION_KEY"])), b"a session's state " * 4
        sealed = codec.seal("t/x/value", plain)
        assert plain not in sealed and codec.open("t/x/value", sealed) == plain


def test_compose_workers_encrypt_sessions_with_a_required_key(operator):
    for name, service in platform_services(load_compose("docker-compose.yml")).items():
        if server_module(compose_argv(service)) == "model_worker":
            assert re.fullmatch(r"\$\{DSV4_SESSION_KEY:\?[^}]+\}", service["environment"]["DSV4_SESSION_KEY"]), name
    check_session_key(compose_processes(*operator))


def test_manifests_workers_encrypt_sessions_with_a_key_from_a_secret(k8s_secrets):
    docs = k8s_documents()
    for name, _, _, container in containers(docs):
        env = {e["name"]: e for e in container.get("env", [])}
        if "DSV4_WORKER_API_KEYS_FILE" in env:  # a serving model worker
            assert "secretKeyRef" in env["DSV4_SESSION_KEY"]["valueFrom"], name
    check_session_key(k8s_processes(docs, k8s_secrets))


# ---- deploy/gen_secrets.py ---------------------------------------------------------------------------------------


def test_gen_secrets_adds_only_what_is_missing_and_checks_service_keys(tmp_path, capsys):
    gen = load_script("gen_secrets")
    env_file, tables = tmp_path / ".env", tmp_path / "secrets"
    env_file.write_text("POSTGRES_PASSWORD=mine\n")
    assert gen.main(["--env-file", str(env_file), "--tables-dir", str(tables)]) == 0
    first = gen.read_env(env_file)
    assert first["POSTGRES_PASSWORD"] == "mine" and set(first) == set(SECRET_ENV)
    assert len(bytes.fromhex(first["DSV4_SESSION_KEY"])) == 32
    assert oct(env_file.stat().st_mode & 0o777) == "0o600" and oct(tables.stat().st_mode & 0o777) == "0o700"
    worker_table = (tables / "worker.json").read_text()
    assert gen.main(["--env-file", str(env_file), "--tables-dir", str(tables)]) == 0
    assert gen.read_env(env_file) == first and (tables / "worker.json").read_text() == worker_table
    assert gen.main(["check", "--env-file", str(env_file), "--tables-dir", str(tables)]) == 0
    table = json.loads(worker_table)
    table[first["JOBS_SERVICE_KEY"]] = "jobs"  # no longer a service key
    (tables / "worker.json").write_text(json.dumps(table))
    capsys.readouterr()
    assert gen.main(["check", "--env-file", str(env_file), "--tables-dir", str(tables)]) == 1
    assert "JOBS_SERVICE_KEY (jobs) is not a service key" in capsys.readouterr().err


def test_the_kubectl_commands_create_every_secret_key_from_the_generated_files(k8s_secrets, operator):
    _, values = operator
    assert k8s_secrets["dsv4-secrets"] == values
    assert {k: parse_api_keys(json.loads(v)) for k, v in k8s_secrets["dsv4-api-keys"].items()}.keys() == {
        "worker.json", "jobs.json", "agent.json", "gateway.json"}
    assert set(k8s_secrets["dsv4-tls"]) == {"tls.crt", "tls.key", "ca.crt"}
    assert yaml.safe_load((K8S / "kustomization.yaml").read_text()).get("secretGenerator") is None
