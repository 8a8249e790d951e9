"""Start-up order never matters, on real processes: a service started before its dependency is alive, says it is not
ready (503 or NOT_SERVING, naming what it waits for) and refuses calls UNAVAILABLE with a retry-after, then becomes
ready once the dependency answers, serves, and goes back to not ready (still running) when the dependency is lost.

A dependency "not up yet" is a local port nothing listens on; it comes up when a forwarding proxy opens there in front
of the real PostgreSQL or Redis, and is lost when the proxy closes."""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import urllib.error
import urllib.request
from email.message import Message

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from realparts import PG, Process, broker_url, child_env, fresh_postgres, start_gateway, wait_for  # noqa: F401

from foundation.clients.worker import Unavailable
from foundation.serving import LIVENESS

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
FAST_RETRIES = {"dependency_retry_max_seconds": "0.5", "dependency_check_seconds": "0.5"}
DEADLINE_S = 60  # a generous bound on each wait; a healthy run takes a second or two per step


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(1 << 16):
            sink.sendall(data)
    for end in (source, sink):
        with contextlib.suppress(OSError):
            end.shutdown(socket.SHUT_RDWR)


class LateProxy:
    """A local port that refuses connections until `open`, then forwards each to `upstream_port`; `close` drops the
    port and every connection through it."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port, self.port = upstream_port, free_port()
        self._listener: socket.socket | None = None
        self._connections: list[socket.socket] = []

    def open(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def close(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() below
            self._listener.close()
        for connection in self._connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                return
            self._connections += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()


def health(target: str, service: str = "") -> int | None:
    with grpc.insecure_channel(target) as channel:
        try:
            return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                             timeout=5).status
        except grpc.RpcError:
            return None


def assert_refused(call, waiting_for: str) -> None:
    """The call is refused UNAVAILABLE, naming what the service waits for, with a retry-after."""
    with pytest.raises(Unavailable) as refused:
        call()
    assert f"not ready: waiting for {waiting_for}" in refused.value.details
    assert float(refused.value.metadata["retry-after"]) >= 1


def http(url: str, body: dict | None = None) -> tuple[int, Message, dict]:
    request = urllib.request.Request(url, json.dumps(body).encode() if body is not None else None,
                                     {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, reply.headers, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, error.headers, json.loads(error.read())


def test_gateway_started_before_its_worker(tmp_path):
    from model_worker.engine.loading import load_model
    from model_worker.server.serve import serve_in_process
    from model_worker.sessions import open_blobs

    worker_port = free_port()
    gateway, url = start_gateway(tmp_path, f"127.0.0.1:{worker_port}", None, f"sqlite:///{tmp_path}/gateway.db",
                                 **FAST_RETRIES)
    chat = {"model": "tiny-late", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    try:
        status, _, body = http(f"{url}/livez")
        assert (status, body) == (200, {"status": "alive"})
        status, headers, body = http(f"{url}/readyz")
        assert (status, body) == (503, {"status": "unavailable", "waiting_for": ["model worker"]})
        assert int(headers["Retry-After"]) >= 1
        status, headers, body = http(f"{url}/v1/chat/completions", chat)
        assert (status, body["error"]["code"]) == (503, "not_ready") and int(headers["Retry-After"]) >= 1
        assert "waiting for model worker" in body["error"]["message"]

        # The worker comes up on the address the gateway was given (in this process: it loads in a second).
        worker = serve_in_process(load_model(None, "tiny", numerics="official"), open_blobs(str(tmp_path / "s")),
                                  port=worker_port, model_name="tiny-late")
        try:
            wait_for(lambda: http(f"{url}/readyz")[0] == 200, DEADLINE_S, "the gateway never became ready")
            assert http(f"{url}/healthz")[2] == {"status": "ok"}
            status, _, body = http(f"{url}/v1/chat/completions", chat)
            assert (status, body["model"], body["choices"][0]["finish_reason"]) == (200, "tiny-late", "length")
            assert [m["id"] for m in http(f"{url}/v1/models")[2]["data"]] == ["tiny-late"]  # the worker's name
        finally:
            worker.stop()  # lost later: not ready again, and still running
        wait_for(lambda: http(f"{url}/readyz")[0] == 503, DEADLINE_S, "the gateway stayed ready")
        assert http(f"{url}/livez")[0] == 200 and gateway.proc.poll() is None
    finally:
        gateway.stop()


@contextlib.contextmanager
def service(args: list[str], env: dict[str, str], log, ready_line: str):
    process = Process(args, env, log)
    try:
        yield f"127.0.0.1:{process.wait_for(ready_line).group(1)}", process
    finally:
        process.stop()


def test_agent_service_started_before_its_database(tmp_path):
    from foundation.clients.agent import AgentClient

    proxy = LateProxy(5432)
    with fresh_postgres("agent") as url, contextlib.ExitStack() as stack:
        stack.callback(proxy.close)
        env = child_env()
        env.update({f"DSV4_AGENT_{name.upper()}": value for name, value in FAST_RETRIES.items()})
        env["DSV4_AGENT_TOOL_PROCESSES"] = "1"
        late_url = url.replace(PG, f"postgresql+psycopg://postgres@127.0.0.1:{proxy.port}")
        target, process = stack.enter_context(service(
            [sys.executable, "-m", "agent_runtime", "serve", "--port", "0", "--database", late_url, "--worker",
             f"127.0.0.1:{free_port()}"], env, tmp_path / "agent.log", r"agent service on 127\.0\.0\.1:(\d+)"))
        client = stack.enter_context(AgentClient(target, timeout=30, retries=0))
        assert (health(target), health(target, LIVENESS)) == (NOT_SERVING, SERVING)
        assert_refused(client.list_sessions, "database")

        proxy.open()
        wait_for(lambda: health(target) == SERVING, DEADLINE_S, "the agent service never became ready")
        assert list(client.list_sessions().sessions) == []  # its tables were made when the database first answered

        proxy.close()
        wait_for(lambda: health(target) == NOT_SERVING, DEADLINE_S, "the agent service stayed SERVING")
        assert_refused(client.list_sessions, "database")
        assert health(target, LIVENESS) == SERVING and process.proc.poll() is None


def test_jobs_service_started_before_its_database_and_broker(tmp_path, broker_url):  # noqa: F811 - fixture
    from foundation.clients.jobs import JobsClient

    database_proxy, broker_proxy = LateProxy(5432), LateProxy(6379)
    with fresh_postgres("jobs") as url, contextlib.ExitStack() as stack:
        stack.callback(database_proxy.close)
        stack.callback(broker_proxy.close)
        env = child_env(database_url=url.replace(PG, f"postgresql+psycopg://postgres@127.0.0.1:{database_proxy.port}"),
                        broker_url=broker_url.replace(":6379/", f":{broker_proxy.port}/"),
                        result_store=str(tmp_path / "results"), port="0", **FAST_RETRIES)
        target, process = stack.enter_context(service(
            [sys.executable, "-m", "services.jobs", "serve"], env, tmp_path / "jobs.log",
            r"jobs service on 127\.0\.0\.1:(\d+)"))
        client = stack.enter_context(JobsClient(target, timeout=30, retries=0))
        assert (health(target), health(target, LIVENESS)) == (NOT_SERVING, SERVING)
        assert_refused(client.list, "database, broker")

        database_proxy.open()  # the broker still missing: still not ready
        wait_for(lambda: _refusal(client) == "broker", DEADLINE_S, "the database was never found")
        assert health(target) == NOT_SERVING

        broker_proxy.open()
        wait_for(lambda: health(target) == SERVING, DEADLINE_S, "the jobs service never became ready")
        line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}}
        batch = client.submit_jsonl(json.dumps(line))  # stored in the migrated tables, published to the broker
        assert [b.id for b in client.list().batches] == [batch.id]
        assert process.proc.poll() is None


def _refusal(client) -> str | None:
    """What the jobs service says it waits for, None once it serves."""
    try:
        client.list()
    except Unavailable as refused:
        return refused.details.rsplit("waiting for ", 1)[-1]
    return None
