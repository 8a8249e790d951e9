"""Turn webhooks for real: the agent service's gRPC server and runtime in this process, a real `tiny` model worker,
SQLite, and an HTTP receiver on localhost (allowed by the operator's list). A detached turn notifies its URL when it
waits for approval and when it ends, signed with the tenant's secret and retried after a failed attempt; a URL the
rules refuse is refused at RunTurn; a call nobody decides on within the approval timeout is rejected."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from realparts import ROOT, tiny_worker_in_process, wait_for

from agent_runtime.service.serve import Runtime, build_server
from agent_runtime.settings import AgentSettings
from foundation.clients.agent import AgentClient, ApprovalRequested, ToolFinished, TurnDone
from foundation.clients.worker import InvalidArgument, Sampling
from foundation.webhooks.signing import signature

SAMPLING = Sampling(temperature=0.0, max_tokens=48)
TENANT = "default"  # no API keys: every caller is the default tenant


class Receiver:
    """Collects the deliveries; answers 500 to the first `fail_first` of them."""

    def __init__(self, fail_first: int = 0) -> None:
        self.deliveries: list[tuple[dict[str, str], bytes]] = []
        self.fail_left = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                failing = receiver.fail_left > 0
                receiver.fail_left -= failing
                receiver.deliveries.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(500 if failing else 204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/turns"

    def events(self) -> list[dict]:
        return [json.loads(body) for _, body in self.deliveries]


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    with tiny_worker_in_process(tmp_path_factory.mktemp("webhook-worker")) as serving:
        yield serving.address


def readme_block(heading: str) -> str:
    """The python code block under a README heading."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(f"### {heading}\n"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def start_runtime(root, worker: str, **settings) -> tuple[Runtime, object, AgentClient]:
    runtime = Runtime(AgentSettings(database_url=f"sqlite:///{root}/agent.db", workers=worker, tool_processes=1,
                                    tool_plugins="agent_runtime_plugin_tools:register", require_approval="charge",
                                    webhook_allow_networks="127.0.0.1", webhook_backoff_seconds=0.2, **settings))
    runtime.webhooks.poll_s = 0.1
    server, port, _ = build_server(runtime, "127.0.0.1", 0, threads=8)
    server.start()
    return runtime, server, AgentClient(f"127.0.0.1:{port}", timeout=120)


def stop_runtime(runtime: Runtime, server, client: AgentClient) -> None:
    client.close()
    server.stop(grace=1).wait()
    runtime.close()


def test_a_detached_turn_notifies_its_url_signed_and_retried(tmp_path, worker):
    receiver = Receiver(fail_first=1)
    runtime, server, client = start_runtime(tmp_path, worker)
    try:
        client.create_session("s-hooks", tools=["charge"])
        stream = client.run_turn("s-hooks", "charge me", mode="non-think", first_tool_choice="charge", max_steps=2,
                                 sampling=SAMPLING, webhook_url=receiver.url)
        call = next(event for event in stream if isinstance(event, ApprovalRequested))
        stream.close()  # the caller leaves; the webhook tells it when to come back
        wait_for(lambda: len(receiver.deliveries) >= 2, 30, "the approval webhook was not retried")
        (first_headers, first_body), (headers, body) = receiver.deliveries[:2]
        assert first_headers["webhook-id"] == headers["webhook-id"] and first_body == body  # the same event again
        secret = runtime.webhooks.store.secrets(TENANT).current
        assert headers["webhook-signature"] == signature(secret, headers["webhook-id"],
                                                         int(headers["webhook-timestamp"]), body)
        waiting = json.loads(body)
        assert waiting["type"] == "turn.awaiting_approval"
        assert waiting["data"]["turn_id"] == stream.turn_id and waiting["data"]["tool_call"] == {
            "id": call.call_id, "name": "charge", "arguments": call.arguments}

        client.decide("s-hooks", call.call_id, approve=True)
        wait_for(lambda: len(receiver.deliveries) >= 3, 60, "the end of the turn was not notified")
        done = receiver.events()[2]
        turn = client.get_turn(stream.turn_id)
        assert done["type"] == "turn.done" and turn.status == "done"
        assert done["data"]["stop_reason"] == turn.stop_reason and done["data"]["content"] == turn.content
        assert done["data"]["usage"]["completion_tokens"] == turn.usage.completion_tokens > 0
        assert [row.delivered_at is not None for row in runtime.webhooks.store.of_turn(TENANT, stream.turn_id)] == [
            True, True]
    finally:
        stop_runtime(runtime, server, client)
        receiver.server.shutdown()


@pytest.mark.parametrize("url, why", [("http://10.1.2.3/hook", "private"), ("ftp://hooks.example/x", "http"),
                                      ("http://user:pw@hooks.example/", "password")])
def test_a_webhook_url_the_rules_refuse_is_refused_before_the_turn_starts(tmp_path, worker, url, why):
    runtime, server, client = start_runtime(tmp_path, worker)
    try:
        client.create_session("s-refused")
        with pytest.raises(InvalidArgument, match=why):
            list(client.run_turn("s-refused", "hi", mode="non-think", sampling=SAMPLING, webhook_url=url))
        assert client.list_turns("s-refused") == []
    finally:
        stop_runtime(runtime, server, client)


def test_a_call_nobody_decides_on_is_rejected_after_the_approval_timeout(tmp_path, worker):
    runtime, server, client = start_runtime(tmp_path, worker, approval_timeout_seconds=0.5)
    try:
        client.create_session("s-timeout", tools=["charge"])
        events = list(client.run_turn("s-timeout", "charge me", mode="non-think", first_tool_choice="charge",
                                      max_steps=2, sampling=SAMPLING))
        [finished] = [e for e in events if isinstance(e, ToolFinished)]
        assert finished.status == "rejected" and "no one decided on this call within 0.5 s" in finished.content
        assert isinstance(events[-1], TurnDone)
    finally:
        stop_runtime(runtime, server, client)


def test_the_readme_examples_of_the_typed_clients_and_of_webhooks_run(tmp_path, worker, capsys):
    receiver = Receiver()
    runtime, server, client = start_runtime(tmp_path, worker)
    try:
        for heading in ("Typed clients, blocking and asyncio", "Turn webhooks"):
            code = readme_block(heading).replace("127.0.0.1:50071", client.target)
            exec(compile(code.replace("https://hooks.example.com/turns", receiver.url), heading, "exec"), {})
        assert re.search(r"\n(answer|length) after \d+ tokens \(turn-\w+, seq \d+\)", capsys.readouterr().out)
        wait_for(lambda: receiver.deliveries, 60, "the README's turn did not notify its URL")
        event = receiver.events()[0]
        assert event["type"] == "turn.done" and event["data"]["session_id"] == "hooked"
    finally:
        stop_runtime(runtime, server, client)
        receiver.server.shutdown()
