"""Batch webhooks on real parts: receivers are HTTP servers on loopback addresses of this machine, the state is in
PostgreSQL, and the last test runs a batch through a Celery worker process whose own task delivers its webhook.
Loopback is refused unless the allow-list names it; a delivery connects to the address it checked, never to one a
second resolution gives; redirects are not followed; every delivery is signed by the Standard Webhooks convention,
which the receiver checks with its own HMAC code."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import re
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import update

from foundation.webhooks.delivery import WebhookPolicy
from foundation.webhooks.destinations import Destinations, InvalidWebhookUrl
from services.jobs.db import make_engine, sessions
from services.jobs.job_store import JobStore, Outcome
from services.jobs.spec import parse_jsonl
from services.jobs.tables import Batch, BatchRequest
from services.jobs.webhook_store import WebhookStore
from services.jobs.webhooks import WebhookSender

LINE = json.dumps({"custom_id": "a", "body": {"messages": [{"role": "user", "content": "hi"}]}})


class Receiver:
    """A webhook receiver: what it was sent (headers with lower-case names, body), answered with the statuses
    queued for it (the last one repeats)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, answers: tuple[int, ...] = (200,),
                 location: str | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        answers_left = list(answers)
        receiver = self

        class Hook(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(answers_left.pop(0) if len(answers_left) > 1 else answers_left[0])
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((host, port), Hook)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.host, self.port = host, self.server.server_port
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def url(self, host: str | None = None) -> str:
        return f"http://{host or self.host}:{self.port}/hook?from=dsv4"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def receiving(*args, **kwargs):
    receiver = Receiver(*args, **kwargs)
    try:
        yield receiver
    finally:
        receiver.close()


def verifies(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The receiver's side of the Standard Webhooks convention, written from the spec."""
    key = base64.b64decode(secret.split("_", 1)[1])
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(part, f"v1,{expected}") for part in headers["webhook-signature"].split(" "))


@pytest.fixture(scope="module")
def store(database_url) -> JobStore:
    # Submissions may name loopback here (the service's allow-list); each test's sender has its own.
    return JobStore(sessions(make_engine(database_url)), destinations=Destinations.parse("127.0.0.1"))


def ended_batch(store: JobStore, url: str, tenant: str = "acme") -> str:
    valid, _ = parse_jsonl(LINE)
    batch, [(request, _)] = store.submit(tenant, valid, [], 3600, webhook_url=url)
    store.claim(request, "w", 60)
    store.finish(request, "w", Outcome("completed", response={}))
    return batch.id


def sender(store: JobStore, allow: str = "", resolve=None, **policy) -> WebhookSender:
    options = {} if resolve is None else {"resolve": resolve}
    return WebhookSender(store, WebhookStore(store.sessions), WebhookPolicy(Destinations.parse(allow), **policy),
                         **options)


def batch_row(store: JobStore, batch_id: str) -> Batch:
    return store.get_any(batch_id)


def make_due(store: JobStore, batch_id: str) -> None:
    with store.sessions.begin() as s:
        s.execute(update(Batch).where(Batch.id == batch_id).values(webhook_next_at=dt.datetime.now(dt.timezone.utc)))


def test_loopback_is_refused_unless_the_allow_list_names_it(store):
    with receiving() as receiver:
        batch_id = ended_batch(store, receiver.url())
        assert sender(store).deliver(batch_id) == "failed"
        assert receiver.received == []  # nothing reached it
        row = batch_row(store, batch_id)
        assert row.webhook_attempts == 1 and row.webhook_delivered_at is None
        assert row.webhook_last_error == "refused: 127.0.0.1 is loopback"
        make_due(store, batch_id)
        assert sender(store, allow="127.0.0.0/8").deliver(batch_id) == "delivered"
        assert len(receiver.received) == 1 and batch_row(store, batch_id).webhook_last_error is None


def test_deliveries_are_signed_and_a_retry_keeps_the_event_id(store):
    with receiving(answers=(500, 200)) as receiver:
        batch_id = ended_batch(store, receiver.url(), tenant="signed")
        hooks = sender(store, allow="127.0.0.1")
        assert hooks.deliver(batch_id) == "failed"
        assert batch_row(store, batch_id).webhook_last_error == "answered HTTP 500"
        assert hooks.deliver(batch_id) == "not due"  # backing off
        make_due(store, batch_id)
        assert hooks.deliver(batch_id) == "delivered"
        make_due(store, batch_id)
        assert hooks.deliver(batch_id) == "not due"  # delivered: never again
    secret = WebhookStore(store.sessions).secrets("signed").current
    assert secret.startswith("whsec_") and len(receiver.received) == 2
    (first, first_body), (second, body) = receiver.received
    assert first["webhook-id"] == second["webhook-id"] == f"msg_{batch_id}"
    assert verifies(secret, first, first_body) and verifies(secret, second, body)
    assert not verifies(secret, {**second, "webhook-timestamp": str(int(second["webhook-timestamp"]) + 1)}, body)
    event = json.loads(body)
    assert event["type"] == "batch.completed" and event["data"]["id"] == batch_id
    assert event["data"]["request_counts"] == {"total": 1, "completed": 1, "failed": 0}
    assert second["content-type"] == "application/json" and second["host"] == f"127.0.0.1:{receiver.port}"


def test_a_rotated_secret_signs_beside_the_new_one_until_its_grace_ends(store, database_url, monkeypatch, capsys):
    from services.jobs import cli

    monkeypatch.setenv("DSV4_JOBS_DATABASE_URL", database_url)

    def secret_command(*flags: str) -> dict:
        assert cli.main(["--tenant", "rotating", "webhook-secret", *flags]) == 0
        return json.loads(capsys.readouterr().out)

    old = secret_command()
    assert old["secret"].startswith("whsec_") and old["previous_signs_until"] is None
    assert secret_command() == old  # shown again, not remade
    new = secret_command("--rotate")
    assert new["secret"] != old["secret"] and new["previous_signs_until"] is not None
    with receiving() as receiver:
        batch_id = ended_batch(store, receiver.url(), tenant="rotating")
        assert sender(store, allow="127.0.0.1").deliver(batch_id) == "delivered"
        WebhookStore(store.sessions).signing.rotate("rotating", grace_s=0)  # the grace of the one it replaces is over
        second = ended_batch(store, receiver.url(), tenant="rotating")
        assert sender(store, allow="127.0.0.1").deliver(second) == "delivered"
    (headers, body), (after, after_body) = receiver.received
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert verifies(new["secret"], headers, body) and verifies(old["secret"], headers, body)
    assert len(after["webhook-signature"].split(" ")) == 1 and not verifies(new["secret"], after, after_body)


def test_a_redirect_is_not_followed(store):
    with receiving() as elsewhere, receiving(answers=(307,), location=elsewhere.url()) as receiver:
        batch_id = ended_batch(store, receiver.url())
        assert sender(store, allow="127.0.0.1").deliver(batch_id) == "failed"
        assert len(receiver.received) == 1 and elsewhere.received == []
        assert batch_row(store, batch_id).webhook_last_error == "answered HTTP 307 (redirects are not followed)"


def test_the_address_checked_is_the_one_connected_to(store):
    """DNS rebinding: `hooks.test` resolves to an allowed address once, to an inside one afterwards. The delivery
    resolves once and connects there; a name that resolves to any inside address is refused whole."""
    with receiving("127.0.0.1") as allowed, receiving("127.0.0.2", port=allowed.port) as inside:
        answers = {"rebinding": [["127.0.0.1"], ["127.0.0.2"]], "mixed": [["127.0.0.1", "127.0.0.2"]],
                   "mapped": [["::ffff:127.0.0.2"]], "mapped-allowed": [["::ffff:127.0.0.1"]]}
        calls = []

        def resolve(host: str, port: int) -> list:
            calls.append(host)
            kind = host.split(".")[0]
            return [ipaddress.ip_address(a) for a in answers[kind][min(calls.count(host), len(answers[kind])) - 1]]

        outcomes = {kind: sender(store, allow="127.0.0.1", resolve=resolve)
                    .deliver(ended_batch(store, allowed.url(f"{kind}.test"))) for kind in answers}
        assert outcomes == {"rebinding": "delivered", "mixed": "failed", "mapped": "failed",
                            "mapped-allowed": "delivered"}
        assert calls == [f"{kind}.test" for kind in answers]  # once per attempt
        assert inside.received == []
        assert [headers["host"] for headers, _ in allowed.received] == [
            f"rebinding.test:{allowed.port}", f"mapped-allowed.test:{allowed.port}"]


@pytest.mark.parametrize("address, allow, refused", [
    ("127.0.0.1", "", "loopback"), ("10.1.2.3", "", "private"), ("172.16.0.1", "", "private"),
    ("192.168.1.1", "", "private"), ("169.254.169.254", "", "link-local"), ("100.64.0.1", "", "CGNAT"),
    ("0.0.0.0", "", "unspecified"), ("224.0.0.251", "", "multicast"), ("255.255.255.255", "", "reserved"),
    ("198.18.0.1", "", "benchmarking"), ("::1", "", "loopback"), ("::", "", "unspecified"),
    ("fe80::1", "", "link-local"), ("fd12:3456::1", "", "unique local"), ("ff02::1", "", "multicast"),
    ("::ffff:169.254.169.254", "", "link-local"), ("64:ff9b::a9fe:a9fe", "", "link-local"),
    ("2002:7f00:1::1", "", "loopback"), ("2001:db8::1", "", "documentation"),
    ("93.184.216.34", "", None), ("2606:4700:4700::1111", "", None),
    ("10.1.2.3", "10.0.0.0/8", None), ("::ffff:10.1.2.3", "10.0.0.0/8", None), ("fd12:3456::1", "fd00::/8", None),
])
def test_inside_addresses_are_refused_in_every_form(address, allow, refused):
    reason = Destinations.parse(allow).refusal("example.com", ipaddress.ip_address(address))
    assert (reason is None) if refused is None else (refused in reason)


def test_submission_refuses_a_url_that_cannot_be_a_webhook(database_url):
    import grpc

    from protos.dsv4.jobs.v1 import jobs_pb2 as jpb
    from protos.dsv4.jobs.v1 import jobs_pb2_grpc
    from services.jobs.celery_app import CeleryPublisher
    from services.jobs.server import build_server
    from services.jobs.use_cases import Jobs

    plain = JobStore(sessions(make_engine(database_url)))  # no allow-list
    valid, _ = parse_jsonl(LINE)
    for url in ("ftp://example.com/", "http://user:pw@example.com/", "https://example.com/" + "a" * 2100,
                "http://exa_mple.com/", "http://example.com/a b", "http://127.0.0.1:8080/", "http://[::1]/",
                "http://localhost/", "http://0x7f.1/", "http://[::ffff:10.0.0.1]/", "http://example.com:0/"):
        with pytest.raises(InvalidWebhookUrl):
            plain.submit("acme", valid, [], 3600, webhook_url=url)
    server, port = build_server(Jobs(plain, CeleryPublisher()), "127.0.0.1", 0)
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel, pytest.raises(grpc.RpcError) as refused:
            jobs_pb2_grpc.JobsStub(channel).CreateBatch(jpb.CreateBatchRequest(
                jsonl=LINE, webhook_url="http://169.254.169.254/latest/meta-data/"))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "link-local (cloud metadata)" in refused.value.details()
    finally:
        server.stop(grace=0)


def test_https_checks_the_url_host_on_the_address_it_checked(store, tmp_path):
    certificate = self_signed(tmp_path, "hooks.test")
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(certificate, tmp_path / "key.pem")
    names = []
    served.sni_callback = lambda _socket, name, _context: names.append(name)
    trusting = ssl.create_default_context(cafile=str(certificate))
    with receiving(tls=served) as receiver:
        hooks = WebhookSender(store, WebhookStore(store.sessions), WebhookPolicy(Destinations.parse("127.0.0.1")),
                              resolve=lambda host, port: [ipaddress.ip_address("127.0.0.1")], tls=trusting)
        good = ended_batch(store, receiver.url("hooks.test").replace("http:", "https:"))
        wrong = ended_batch(store, receiver.url("other.test").replace("http:", "https:"))
        assert (hooks.deliver(good), hooks.deliver(wrong)) == ("delivered", "failed")
    assert names[0] == "hooks.test" and len(receiver.received) == 1
    assert batch_row(store, wrong).webhook_last_error.startswith("TLS with other.test failed")


def test_a_receiver_that_never_answers_costs_one_bounded_attempt(store):
    with socket.create_server(("127.0.0.1", 0)) as silent:
        batch_id = ended_batch(store, f"http://127.0.0.1:{silent.getsockname()[1]}/hook")
        assert sender(store, allow="127.0.0.1", timeout_s=0.3).deliver(batch_id) == "failed"
        assert batch_row(store, batch_id).webhook_last_error == "no answer within 0.3s"


def self_signed(root, name: str):
    """A certificate for `name` (and its key, key.pem), its own issuer."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
                   .not_valid_after(now + dt.timedelta(hours=1))
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(key, hashes.SHA256()))
    (root / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))
    path = root / "cert.pem"
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


def test_a_batch_ended_in_celery_has_its_webhook_sent_by_a_task_of_its_own(store, database_url, broker_url,
                                                                           tmp_path):
    from realparts import start_celery, wait_for

    from services.jobs import celery_app
    from services.jobs.settings import JobsSettings
    from services.jobs.use_cases import Jobs

    settings = dict(database_url=database_url, broker_url=broker_url, worker_target="127.0.0.1:9",
                    result_store=str(tmp_path / "results"), webhook_allow_networks="127.0.0.1")
    celery_app.configure(JobsSettings(**settings))  # this process publishes to the same broker
    celery = start_celery(tmp_path, "hooks", concurrency=1, **settings)
    try:
        # A row holding a top_k past what the wire carries (stored before submission checked it) fails at once in
        # the runner, before any model worker: the request's end ends the batch and announces its webhook.
        line = json.dumps({"custom_id": "too-wide", "body": {"messages": [{"role": "user", "content": "hi"}]}})
        valid, _ = parse_jsonl(line)
        body = valid[0][1].to_json()
        body["sampling"]["top_k"] = 2 ** 40
        with receiving() as receiver:
            batch, to_publish = store.submit("celery", valid, [], 3600, webhook_url=receiver.url())
            with store.sessions.begin() as s:
                s.execute(update(BatchRequest).where(BatchRequest.id == to_publish[0][0]).values(body=body))
            celery_app.publish(to_publish)
            wait_for(lambda: receiver.received, 60, "no webhook arrived")
            # A batch with no valid line ends failed as it is submitted: its webhook is announced then.
            refused = Jobs(store, celery_app.CeleryPublisher()).submit_jsonl(
                "celery", line.replace('"hi"}]}', '"hi"}], "top_k": -1}'), webhook_url=receiver.url())
            wait_for(lambda: len(receiver.received) == 2, 60, "no webhook for the batch failed at submission")
        (headers, body), (_, refused_body) = receiver.received
        event = json.loads(body)
        assert event["type"] == "batch.completed" and event["data"]["id"] == batch.id
        assert event["data"]["request_counts"] == {"total": 1, "completed": 0, "failed": 1}
        assert verifies(WebhookStore(store.sessions).secrets("celery").current, headers, body)
        refused_event = json.loads(refused_body)
        assert refused_event["type"] == "batch.failed" and refused_event["data"]["id"] == refused["id"]
        log = (tmp_path / "hooks.log").read_text()
        assert re.search(r"Task jobs\.deliver_webhook\[[^]]+\] succeeded in [^:]+: 'delivered'", log), log[-2000:]
    finally:
        celery.stop()
