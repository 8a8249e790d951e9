"""Every caller of the model worker reaches it over mutual TLS from its own settings (worker_tls_ca, worker_tls_cert,
worker_tls_key, worker_tls_server_name): the gateway, the agent service and the jobs runner, each through the worker
pool it builds, against a real worker that requires client certificates signed by the test CA. Settings that leave
something out (no TLS, no client certificate, another CA, a name the certificate does not carry) are turned away."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pki import issue, write

from agent_runtime.settings import AgentSettings
from foundation.chat import load_tokenizer
from foundation.clients.worker import Unavailable, WorkerClient
from foundation.clients.worker.policy import worker_tls
from foundation.serving import TlsFiles, set_serving
from model_worker.engine.loading import load_model
from model_worker.server.runtime import WorkerRuntime
from model_worker.server.serve import SERVICE_NAME, build_server
from model_worker.sessions import SessionStore, open_blobs
from services.gateway.settings import GatewaySettings
from services.jobs.settings import JobsSettings

WORKER_NAME = "model-worker"  # what the worker's certificate names besides 127.0.0.1 (a compose service name)


def worker_certificate(ca):
    """A server certificate from `ca` naming WORKER_NAME and 127.0.0.1, as deploy/gen_tls.py issues one."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, WORKER_NAME)]))
            .issuer_name(ca[0].subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(WORKER_NAME),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca[1], hashes.SHA256()))
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict:
    directory = tmp_path_factory.mktemp("pki")
    ca = issue("test CA", ca=True)
    return {"ca": write(directory, "ca", *ca)[0], "worker": write(directory, "worker", *worker_certificate(ca)),
            "client": write(directory, "client", *issue("client", ca)),
            "stranger": write(directory, "stranger", *issue("stranger", ip="127.0.0.1"))}


@pytest.fixture(scope="module")
def worker(pki, tmp_path_factory):
    """A real model worker (tiny, random weights) requiring client certificates the test CA signed; its address."""
    model = load_model(None, "tiny", numerics="official")
    blobs = open_blobs(str(tmp_path_factory.mktemp("sessions")))
    runtime = WorkerRuntime(model, load_tokenizer(), SessionStore(blobs, model.fingerprint, model.layout))
    tls = TlsFiles(*(Path(p) for p in pki["worker"]), client_ca=Path(pki["ca"]))
    server, port, health = build_server(runtime, "127.0.0.1", 0, threads=4, tls=tls)
    runtime.start()
    server.start()
    set_serving(health, SERVICE_NAME, True)
    yield f"127.0.0.1:{port}"
    server.stop(grace=1).wait()
    runtime.stop()


def mutual(pki, **more) -> dict[str, str]:
    """A caller's settings for mutual TLS with the worker."""
    return {"worker_tls_ca": pki["ca"], "worker_tls_cert": pki["client"][0], "worker_tls_key": pki["client"][1],
            **more}


def test_the_gateway_reaches_the_worker_over_mutual_tls(worker, pki, tmp_path):
    from services.gateway.app import build

    gateway = build(GatewaySettings(database_url=f"sqlite:///{tmp_path}/gateway.db", files_dir=str(tmp_path / "f"),
                                    workers=worker, **mutual(pki, worker_tls_server_name=WORKER_NAME)))  # as in compose

    async def model_name() -> str:
        gateway.connect()  # on this loop, as the app's lifespan does
        client = gateway.worker()
        try:
            return (await client.model_info(timeout=30)).model
        finally:
            await client.close()
            gateway.workers.close()

    assert asyncio.run(model_name()) == "tiny"


def test_the_agent_service_reaches_the_worker_over_mutual_tls(worker, pki, tmp_path):
    from agent_runtime.service.serve import Runtime

    runtime = Runtime(AgentSettings(database_url=f"sqlite:///{tmp_path}/agent.db", tool_processes=1,
                                    workers=worker, **mutual(pki, worker_tls_server_name=WORKER_NAME)))  # as in compose
    try:
        assert runtime.workers.client(runtime.workers.route()).model_info(timeout=30).model == "tiny"
    finally:
        runtime.close()


def test_the_jobs_runner_reaches_the_worker_over_mutual_tls(worker, pki, tmp_path):
    from services.jobs import celery_app

    before = celery_app.settings
    celery_app.configure(JobsSettings(database_url=f"sqlite:///{tmp_path}/jobs.db", worker_target=worker,
                                      result_store=str(tmp_path / "results"), **mutual(pki)))
    try:
        _, runner = celery_app.resources()
        assert runner.workers.client(worker).model_info(timeout=30).model == "tiny"
        runner.workers.close()
    finally:
        celery_app.configure(before)


def model_name(worker: str, settings) -> str:
    """What a caller with `settings` hears from the worker, through the options every caller builds its clients
    with."""
    with WorkerClient(worker, timeout=30, retries=0, **worker_tls(settings)) as client:
        return client.model_info().model


@pytest.mark.parametrize("settings", [AgentSettings, GatewaySettings, JobsSettings], ids=lambda s: s.__name__)
def test_settings_that_leave_something_out_are_turned_away(worker, pki, settings):
    assert model_name(worker, settings(**mutual(pki))) == "tiny"
    assert model_name(worker, settings(**mutual(pki, worker_tls_server_name=WORKER_NAME))) == "tiny"
    refused = [
        {},  # plaintext
        {"worker_tls_ca": pki["ca"]},  # no client certificate
        mutual(pki, worker_tls_ca=pki["stranger"][0]),  # does not trust the worker's CA
        mutual(pki, worker_tls_cert=pki["stranger"][0], worker_tls_key=pki["stranger"][1]),  # not from the CA
        mutual(pki, worker_tls_server_name="elsewhere.example"),  # a name the certificate does not carry
    ]
    for fields in refused:
        with pytest.raises(Unavailable):
            model_name(worker, settings(**fields))


def test_incomplete_tls_settings_fail_when_the_clients_are_built(pki):
    with pytest.raises(ValueError, match="needs its key"):
        worker_tls(AgentSettings(worker_tls_ca=pki["ca"], worker_tls_cert=pki["client"][0]))
    with pytest.raises(ValueError, match="needs TLS"):
        worker_tls(GatewaySettings(worker_tls_server_name=WORKER_NAME))
    with pytest.raises(FileNotFoundError):
        worker_tls(JobsSettings(worker_tls_ca=pki["ca"] + ".missing"))
    assert worker_tls(JobsSettings()) == {}  # plaintext, as the embedded platform runs
