"""A Think Max turn runs as an interactive job: real PostgreSQL (shared by the jobs service and the agent runtime,
each with its own migrations), Redis, a Celery worker process, the jobs gRPC service and a model worker process. The
agent's plain worker session becomes a Think Max copy the first time, and a fork costs nothing after that."""

from __future__ import annotations

from realparts import jobs_service

from agent_runtime.events import JobStatus, ModeChosen, TurnDone
from agent_runtime.loop import AgentLoop, Limits
from agent_runtime.store.transcript import TranscriptStore
from agent_runtime.store.transcript import upgrade as upgrade_agent
from agent_runtime.tools import ToolRegistry
from foundation.clients.jobs import JobsClient
from foundation.clients.worker import Sampling, WorkerClient
from foundation.sql import make_engine, sessions


def test_think_max_turns_go_through_the_jobs_service(tmp_path, database_url, broker_url, model_worker):
    target, _ = model_worker
    with jobs_service(tmp_path, database_url, broker_url, target) as jobs_target:
        think_max_turns(database_url, target, jobs_target)


def think_max_turns(database_url: str, target: str, jobs_target: str) -> None:
    engine = make_engine(database_url)
    upgrade_agent(database_url)  # the agent runtime's tables beside the jobs service's
    tools = ToolRegistry()
    tools.tool("noop")(lambda: "ok")  # a tool name the worker takes (a lambda's is "<lambda>")
    worker, jobs = WorkerClient(target, timeout=120), JobsClient(jobs_target)
    loop = AgentLoop(TranscriptStore(sessions(engine)), worker, tools, jobs=jobs)
    try:
        loop.create_session("acme", "deep", system_prompt="think")
        plain = loop.store.get("acme", "deep").worker_session_id
        sampling = Sampling(temperature=0.0, max_tokens=6)
        events = list(loop.run_turn("acme", "deep", [{"role": "user", "content": "prove it"}], mode="think-max",
                                    sampling=sampling, limits=Limits(max_steps=1)))
        chosen = next(e for e in events if isinstance(e, ModeChosen))
        assert chosen.mode == "think-max" and chosen.via_job and "Think Max copy" in chosen.reason
        statuses = [e.status for e in events if isinstance(e, JobStatus)]
        assert statuses[-1] == "completed"
        assert isinstance(events[-1], TurnDone)
        moved = loop.store.get("acme", "deep").worker_session_id
        assert moved != plain and worker.get_session(moved).think_max  # the agent now lives on the Think Max copy
        events = list(loop.run_turn("acme", "deep", [{"role": "user", "content": "again"}], difficulty="hard",
                                    sampling=sampling, limits=Limits(max_steps=1)))
        chosen = next(e for e in events if isinstance(e, ModeChosen))
        assert chosen.via_job and "on the Think Max session" in chosen.reason  # no copy needed any more
        assert [e.status for e in events if isinstance(e, JobStatus)][-1] == "completed"
        assert loop.store.get("acme", "deep").steps == 2
    finally:
        worker.close()
        jobs.close()
        engine.dispose()
