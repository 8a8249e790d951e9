"""TLS and mutual TLS on a real worker: certificates made here (a test CA, the server for 127.0.0.1, a client); a
client that does not trust the server, a plaintext client, and (with mTLS) a client without a certificate are all
turned away, and the typed client with the right files is served."""

from __future__ import annotations

from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2
from pki import make_pki

from foundation.chat import load_tokenizer
from foundation.clients.worker import Message, Sampling, Unavailable, WorkerClient, tls_credentials
from foundation.serving import TlsFiles
from model_worker.engine.loading import load_model
from model_worker.server.runtime import WorkerRuntime
from model_worker.server.serve import SERVICE_NAME, build_server
from model_worker.sessions import SessionStore, open_blobs


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def model():
    return load_model(None, "tiny", numerics="official")


def _serve(model, root, tls: TlsFiles):
    runtime = WorkerRuntime(model, load_tokenizer(), SessionStore(open_blobs(str(root)), model.fingerprint,
                                                                   model.layout))
    server, port, health = build_server(runtime, "127.0.0.1", 0, threads=4, tls=tls)
    runtime.start()
    server.start()
    for name in ("", SERVICE_NAME):
        health.set(name, health_pb2.HealthCheckResponse.SERVING)
    return runtime, server, f"127.0.0.1:{port}"


def _hello(target: str, credentials=None) -> str:
    with WorkerClient(target, credentials=credentials, timeout=30, retries=0) as client:
        return client.generate_text(messages=[Message("user", "hi")], sampling=Sampling(temperature=0.0,
                                                                                        max_tokens=2))[0].finish_reason


@pytest.mark.parametrize("mutual", [False, True])
def test_tls_and_mutual_tls(model, tmp_path, pki, mutual):
    cert, key = pki["server"]
    tls = TlsFiles(Path(cert), Path(key), Path(pki["ca"]) if mutual else None)
    runtime, server, target = _serve(model, tmp_path, tls)
    try:
        client_files = dict(cert=pki["client"][0], key=pki["client"][1]) if mutual else {}
        assert _hello(target, tls_credentials(ca=pki["ca"], **client_files)) == "length"
        with pytest.raises(Unavailable):
            _hello(target)  # plaintext
        with pytest.raises(Unavailable):
            _hello(target, tls_credentials(ca=pki["stranger"][0], **client_files))  # does not trust the server
        if mutual:
            with pytest.raises(Unavailable):
                _hello(target, tls_credentials(ca=pki["ca"]))  # no client certificate
            with pytest.raises(Unavailable):
                _hello(target, tls_credentials(ca=pki["ca"], cert=pki["stranger"][0], key=pki["stranger"][1]))
    finally:
        server.stop(grace=1).wait()
        runtime.stop()


def test_a_client_certificate_needs_its_key(pki):
    with pytest.raises(ValueError, match="needs its key"):
        tls_credentials(ca=pki["ca"], cert=pki["client"][0])


def test_serve_needs_both_certificate_and_key():
    import argparse

    from foundation.serving import tls_files

    assert tls_files(argparse.Namespace(tls_cert=None, tls_key=None, tls_client_ca=None)) is None
    with pytest.raises(SystemExit, match="both"):
        tls_files(argparse.Namespace(tls_cert="server.pem", tls_key=None, tls_client_ca="ca.pem"))
