"""The jobs service over TLS and mutual TLS, configured from its settings: the typed client with the right files is
served; a plaintext client, one that does not trust the server and (mutual TLS) one without a certificate the CA
signed are turned away. The gateway and the agent service reach it over TLS from their own settings."""

from __future__ import annotations

import contextlib

import pytest
from pki import make_pki

from foundation.clients.jobs import JobsClient
from foundation.clients.worker import Unavailable
from foundation.serving import tls_files
from services.jobs.settings import JobsSettings


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@contextlib.contextmanager
def jobs_over_tls(root, pki, mutual: bool):
    from services.jobs.celery_app import CeleryPublisher
    from services.jobs.db import make_engine, sessions, upgrade
    from services.jobs.job_store import JobStore
    from services.jobs.server import build_server
    from services.jobs.use_cases import Jobs

    cert, key = pki["server"]
    settings = JobsSettings(database_url=f"sqlite:///{root}/jobs.db", tls_cert=cert, tls_key=key,
                            tls_client_ca=pki["ca"] if mutual else None)
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    server, port = build_server(Jobs(JobStore(sessions(engine)), CeleryPublisher()), "127.0.0.1", 0,
                                tls=tls_files(settings))
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=1).wait()
        engine.dispose()


def batches(target: str, **tls: str) -> list:
    with JobsClient(target, timeout=30, retries=0, **tls) as client:
        return list(client.list().batches)


@pytest.mark.parametrize("mutual", [False, True])
def test_jobs_service_over_tls(tmp_path, pki, mutual):
    identity = dict(tls_cert=pki["client"][0], tls_key=pki["client"][1]) if mutual else {}
    with jobs_over_tls(tmp_path, pki, mutual) as target:
        assert batches(target, tls_ca=pki["ca"], **identity) == []
        with pytest.raises(Unavailable):
            batches(target)  # plaintext
        with pytest.raises(Unavailable):
            batches(target, tls_ca=pki["stranger"][0], **identity)  # does not trust the server
        if mutual:
            with pytest.raises(Unavailable):
                batches(target, tls_ca=pki["ca"])  # no client certificate
            with pytest.raises(Unavailable):
                batches(target, tls_ca=pki["ca"], tls_cert=pki["stranger"][0], tls_key=pki["stranger"][1])


def test_callers_reach_the_jobs_service_over_mutual_tls_from_their_settings(tmp_path, pki):
    from agent_runtime.service.serve import Runtime
    from agent_runtime.settings import AgentSettings
    from services.gateway.app import build
    from services.gateway.settings import GatewaySettings

    with jobs_over_tls(tmp_path, pki, mutual=True) as target:
        tls = dict(jobs_target=target, jobs_tls_ca=pki["ca"], jobs_tls_cert=pki["client"][0],
                   jobs_tls_key=pki["client"][1])
        gateway = build(GatewaySettings(database_url=f"sqlite:///{tmp_path}/gateway.db",
                                        files_dir=str(tmp_path / "files"), **tls))
        runtime = Runtime(AgentSettings(database_url=f"sqlite:///{tmp_path}/agent.db", tool_processes=1, **tls))
        try:
            assert list(gateway.jobs.list().batches) == list(runtime.jobs.list().batches) == []
        finally:
            gateway.jobs.close()
            runtime.runner.stop(grace_s=0)
            runtime.close()


def test_a_client_certificate_needs_its_key(pki):
    with pytest.raises(ValueError, match="needs its key"):
        JobsClient("127.0.0.1:1", tls_ca=pki["ca"], tls_cert=pki["client"][0])
