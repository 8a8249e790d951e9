"""Several model workers for real: two worker processes heartbeat into a Redis registry over one shared session store;
the agent service routes by it. A worker killed in the middle of a turn: the step runs again on the other worker from
the last commit (its history resumed from the store, not prefilled), and the session stays there."""

from __future__ import annotations

import signal
import sys
import time

import pytest
from realparts import Process, child_env, redis_registry

from foundation.clients.agent import AgentClient
from foundation.clients.agent.events import kind_of
from foundation.clients.worker import Sampling

REGISTRY = "redis://127.0.0.1:6379/10"


@pytest.fixture(scope="module")
def registry():
    with redis_registry(REGISTRY) as registry:
        yield registry


@pytest.fixture(scope="module")
def platform(registry, database_url, tmp_path_factory):
    root = tmp_path_factory.mktemp("failover")
    started = [Process([sys.executable, "-m", "model_worker", "serve", "--config", "tiny", "--port", "0",
                        "--session-store", str(root / "sessions"), "--registry", REGISTRY,
                        "--heartbeat-seconds", "0.5"], child_env(), root / f"{name}.log") for name in ("w1", "w2")]
    env = child_env()
    env.update({"DSV4_AGENT_WORKER_REGISTRY": REGISTRY, "DSV4_AGENT_WORKERS": ""})
    agent = Process([sys.executable, "-m", "agent_runtime", "serve", "--port", "0", "--database", database_url],
                    env, root / "agent.log")  # it finds the workers in the registry as they come up
    ready = r"serving \S+ on (127\.0\.0\.1:\d+)"
    workers = {p.wait_for(ready).group(1): p for p in started}
    port = agent.wait_for(r"agent service on 127\.0\.0\.1:(\d+)").group(1)
    client = AgentClient(f"127.0.0.1:{port}", timeout=120)
    yield client, workers
    client.close()
    agent.stop()
    for process in workers.values():
        process.stop()


def test_both_workers_register_with_their_load(platform, registry):
    _, workers = platform
    listed = {w.address: w for w in registry.workers()}
    assert set(listed) == set(workers)
    assert all(w.model == "tiny" and w.max_running == 64 and w.fingerprint for w in listed.values())


def test_a_turn_goes_on_on_another_worker_when_its_worker_is_killed(platform, registry):
    client, workers = platform
    session = client.create_session("failover", system_prompt="You are terse.")
    first = list(client.run_turn("failover", "hello", mode="non-think",
                                 sampling=Sampling(temperature=0.0, max_tokens=8)))
    assert kind_of(first[-1]) == "turn_done"
    holder = registry.holder(session.worker_session_id)
    assert holder in workers
    history = first[-1].usage.reused_tokens + first[-1].usage.prefilled_tokens \
        + first[-1].usage.completion_tokens

    stream = client.run_turn("failover", "tell me more", mode="non-think",
                             sampling=Sampling(temperature=0.0, max_tokens=200))
    events = []
    for event in stream:
        events.append(event)
        if kind_of(event) == "text_delta":
            break  # mid-generation: kill the worker that runs it
    workers[holder].kill(signal.SIGKILL)
    events += list(stream)
    kinds = [kind_of(e) for e in events if kind_of(e) != "text_delta"]
    assert kinds == ["mode_chosen", "step_started", "step_started", "turn_done"], events[-1]
    assert events[-1].reason in ("answer", "length") and events[-1].steps == 1
    step_numbers = [e.step for e in events if kind_of(e) == "step_started"]
    assert step_numbers == [2, 2]  # the same step, again from the last commit

    usage = events[-1].usage
    assert usage.completion_tokens > 0
    assert usage.reused_tokens >= history - 2  # the history came from the store...
    assert usage.prefilled_tokens <= 16  # ...only the new message was computed
    other = next(a for a in workers if a != holder)
    time.sleep(1.0)  # a heartbeat of the survivor, listing the session hot
    assert registry.holder(session.worker_session_id) == other
    assert [w.address for w in registry.workers() if w.address == holder] == []  # gone within three beats
    after = list(client.run_turn("failover", "and now?", mode="non-think",
                                 sampling=Sampling(temperature=0.0, max_tokens=4)))
    assert after[-1].usage.prefilled_tokens <= 16 and client.get_session("failover").steps == 3
