"""The deployment's two Redis servers, run for real: this machine's redis-server with exactly the arguments compose
and the manifests give it (on a free local port). Each refuses a client without its password; every Redis URL the
platform's processes hold reaches its server, through Celery's transport too; the warm tier's server passes the
session store's own check of a cache (a memory limit, an evicting policy) and the broker's does not."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from deploy_manifests import k8s_documents
from deploy_operator import (
    compose_processes,
    k8s_processes,
    redis_servers_compose,
    redis_servers_k8s,
)
from realparts import Process

from foundation.blobs.stores import open_blobs

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server on this machine")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def redis_server(options: dict[str, str], directory: Path):
    """redis-server with the deployment's options, here: its own port, loopback, a scratch directory."""
    port = free_port()
    argv = ["redis-server", *(a for name, value in options.items() for a in (f"--{name}", value)),
            "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)]
    server = Process(argv, dict(os.environ), directory / "redis.log")
    try:
        server.wait_for("Ready to accept connections", timeout=20)
        yield port
    finally:
        server.stop()


def unauthenticated_ping(port: int) -> bytes:
    """The server's answer to a PING without AUTH (raw: a client library would retry an authentication error)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(b"PING\r\n")
        return client.recv(256)


def local(url: str, ports: dict[str, int]) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[0] + f"@127.0.0.1:{ports[parts.hostname]}"
    return urlunsplit(parts._replace(netloc=netloc))


def deployments(operator, secrets) -> dict[str, tuple[dict, list]]:
    root, values = operator
    docs = k8s_documents()
    return {"compose": (redis_servers_compose(values), compose_processes(root, values)),
            "k8s": (redis_servers_k8s(docs, secrets), k8s_processes(docs, secrets))}


@pytest.mark.parametrize("deployment", ["compose", "k8s"])
def test_the_redis_servers_require_their_passwords_and_the_warm_one_is_a_cache(deployment, operator, k8s_secrets,
                                                                               tmp_path):
    from kombu import Connection

    servers, processes = deployments(operator, k8s_secrets)[deployment]
    assert set(servers) == {"redis", "redis-warm"}
    with contextlib.ExitStack() as stack:
        ports = {}
        for name, options in servers.items():
            (tmp_path / name).mkdir()
            ports[name] = stack.enter_context(redis_server(options, tmp_path / name))
            assert unauthenticated_ping(ports[name]).startswith(b"-NOAUTH"), name
        urls = {(p.name, setting): local(value, ports) for p in processes for setting, value in p.env.items()
                if value.startswith("redis://")}
        for (name, setting), url in urls.items():
            assert redis.Redis.from_url(url).ping(), (name, setting)
            if setting.endswith("BROKER_URL"):
                with Connection(url, connect_timeout=5) as broker:
                    broker.ensure_connection(max_retries=1)
        warm = {url for (_, setting), url in urls.items() if setting.endswith("WARM_STORE")}
        durable = {url for (_, setting), url in urls.items() if not setting.endswith("WARM_STORE")}
        assert warm and durable
        for url in warm:
            assert open_blobs(url).memory_warnings() == [], url
        for url in durable:
            assert open_blobs(url).memory_warnings(), f"{url}: the broker's Redis must never evict"
