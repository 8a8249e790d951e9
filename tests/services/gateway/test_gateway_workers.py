"""The gateway over several workers: one of its configured workers is down. Requests that need no session go to the
live one (a worker unreachable before the first event is skipped); health and the model's name come from any live
worker."""

from __future__ import annotations

import json
import socket
import sys
import urllib.request

from realparts import Process, child_env


def call(url: str, body: dict | None = None) -> str:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        assert answer.status == 200
        return answer.read().decode()


def test_a_dead_worker_is_routed_around(tmp_path, model_worker, database_url):
    live, _ = model_worker
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{probe.getsockname()[1]}"
    env = child_env()
    env.update({"DSV4_GATEWAY_DATABASE_URL": database_url, "DSV4_GATEWAY_FILES_DIR": str(tmp_path / "files")})
    process = Process([sys.executable, "-m", "services.gateway", "--port", "0", "--worker", f"{dead},{live}"],
                      env, tmp_path / "gateway.log")
    try:
        port = process.wait_for(r"gateway on http://127\.0\.0\.1:(\d+)/v1").group(1)
        base = f"http://127.0.0.1:{port}"
        assert json.loads(call(f"{base}/healthz")) == {"status": "ok"}
        for stream in (False, True, False, True):  # equal loads take turns: the dead one comes up each time
            body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": stream}
            text = call(f"{base}/v1/chat/completions", body)
            assert ("data: [DONE]" in text) if stream else json.loads(text)["choices"][0]["message"]
    finally:
        process.stop()
