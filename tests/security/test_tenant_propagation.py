"""The end user's tenant reaches the data at every hop: the gateway, the jobs service (and its Celery runners) and
the agent service each call the model worker with one service key, naming the tenant they act for; the worker
enforces that tenant. Attacked over the public APIs with two tenants' keys, on real parts: a model worker process
with a key table, the jobs service (gRPC server, a Celery worker process, PostgreSQL, Redis), the gateway and the
agent service as processes."""

from __future__ import annotations

import json
import sys
import time

import pytest
from realparts import Process, broker_url, child_env, database_url, jobs_service, start_gateway  # noqa: F401

from foundation.auth import ApiKey, Forbidden, Unauthenticated, parse_api_keys, tenant_for
from foundation.clients.agent import TurnDone
from foundation.clients.worker import Message, NotFound, PermissionDenied, Sampling, WorkerClient
from foundation.tenancy import TENANT_HEADER, acting_for

WORKER_KEYS = {"w-alice": "alice", "w-bob": "bob", "w-jobs": {"tenant": "jobs", "service": True},
               "w-gateway": {"tenant": "gateway", "service": True}, "w-agent": {"tenant": "agent", "service": True}}
JOBS_KEYS = {"j-alice": "alice", "j-bob": "bob", "j-gateway": {"tenant": "gateway", "service": True},
             "j-agent": {"tenant": "agent", "service": True}}
EDGE_KEYS = {"alice-key": "alice", "bob-key": "bob"}
SHORT = Sampling(temperature=0.0, max_tokens=4)


def test_only_service_keys_act_for_the_tenant_they_name():
    keys = parse_api_keys({"k": "alice", "svc": {"tenant": "jobs", "service": True}})
    assert keys == {"k": ApiKey("alice"), "svc": ApiKey("jobs", service=True)}
    bearer = {"authorization": "Bearer svc"}
    assert tenant_for(bearer, keys) == "jobs"
    assert tenant_for({**bearer, TENANT_HEADER: "bob"}, keys) == "bob"
    assert tenant_for({"authorization": "Bearer k", TENANT_HEADER: "alice"}, keys) == "alice"  # its own: harmless
    with pytest.raises(Forbidden):
        tenant_for({"authorization": "Bearer k", TENANT_HEADER: "bob"}, keys)
    with pytest.raises(Unauthenticated):
        tenant_for({TENANT_HEADER: "bob"}, keys)
    with pytest.raises(ValueError):
        tenant_for({**bearer, TENANT_HEADER: "bad\ntenant"}, keys)
    with pytest.raises(ValueError):
        parse_api_keys({"k": {"tenant": "alice", "service": "yes"}})


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    root = tmp_path_factory.mktemp("propagation-worker")
    (root / "keys.json").write_text(json.dumps(WORKER_KEYS))
    process = Process([sys.executable, "-m", "model_worker", "serve", "--config", "tiny", "--port", "0",
                       "--session-store", str(root / "sessions"), "--api-keys", str(root / "keys.json")],
                      child_env(), root / "worker.log")
    target = "127.0.0.1:" + process.wait_for(r"serving \S+ on 127\.0\.0\.1:(\d+)").group(1)
    clients = {key: WorkerClient(target, api_key=key, timeout=120) for key in WORKER_KEYS}
    yield target, clients
    for client in clients.values():
        client.close()
    process.stop()


@pytest.fixture(scope="module")
def jobs(tmp_path_factory, worker, database_url, broker_url):  # noqa: F811 - fixtures
    root = tmp_path_factory.mktemp("propagation-jobs")
    with jobs_service(root, database_url, broker_url, worker[0], api_keys=JOBS_KEYS, worker_api_key="w-jobs") as target:
        yield target


def test_a_service_key_acts_for_the_tenant_it_names_and_no_other(worker):
    _, clients = worker
    with acting_for("alice"):
        made = clients["w-jobs"].create_session(session_id="svc-made", system_prompt="hi")
    assert made.session_id == "svc-made"
    assert clients["w-alice"].get_session("svc-made").tokens == made.tokens  # it lives in alice's tenant
    with pytest.raises(NotFound):
        clients["w-bob"].get_session("svc-made")
    with acting_for("bob"), pytest.raises(NotFound):
        clients["w-jobs"].get_session("svc-made")
    with pytest.raises(NotFound):  # the service's own tenant does not hold it either
        clients["w-jobs"].get_session("svc-made")
    with acting_for("alice"), pytest.raises(PermissionDenied):  # an end user's key cannot name another tenant
        clients["w-bob"].get_session("svc-made")


def _batch(jobs_target: str, key: str, session_id: str):
    from foundation.clients.jobs import JobRequest, JobsClient

    with JobsClient(jobs_target, api_key=key, timeout=60) as client:
        request = JobRequest("q", [Message("user", "go on")], mode="non-think", session_id=session_id,
                             sampling=Sampling(temperature=0.0, max_tokens=4))
        batch = client.submit([request])
        deadline = time.monotonic() + 120
        while client.get(batch.id).status not in ("completed", "failed", "expired", "cancelled"):
            assert time.monotonic() < deadline, "the batch did not end"
            time.sleep(0.2)
        [line] = list(client.results(batch.id))
        return line


def test_a_batch_line_reaches_its_own_tenants_sessions_only(worker, jobs):
    _, clients = worker
    clients["w-alice"].create_session(session_id="alice-notes", system_prompt="notes")
    own = _batch(jobs, "j-alice", "alice-notes")
    assert own.status == "completed", own.error_message  # the runner acted for alice, whose session it is
    job_session = json.loads(own.response_json)["session_id"]
    assert clients["w-alice"].get_session(job_session).tokens > 0  # the job's fork lives in alice's tenant
    for target in ("alice-notes", job_session):  # the user's own session, and the job's (a guessable name)
        stolen = _batch(jobs, "j-bob", target)
        assert stolen.status == "failed" and "NotFound" in stolen.error_code + stolen.error_message, stolen
    with pytest.raises(NotFound):
        clients["w-bob"].get_session(job_session)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, worker, jobs, database_url):  # noqa: F811 - fixtures
    root = tmp_path_factory.mktemp("propagation-gateway")
    process, url = start_gateway(root, worker[0], jobs, database_url, EDGE_KEYS, worker_api_key="w-gateway",
                                 jobs_api_key="j-gateway")
    yield f"{url}/v1"
    process.stop()


def test_the_gateway_acts_for_its_caller(worker, gateway):
    from openai import NotFoundError, OpenAI, PermissionDeniedError

    _, clients = worker
    alice = OpenAI(base_url=gateway, api_key="alice-key", max_retries=0, timeout=120)
    first = alice.responses.create(model="tiny", input="Remember: the code is 1234.", max_output_tokens=4)
    sessions = clients["w-alice"].list_sessions()
    assert sessions, "the gateway's session for alice lives in alice's tenant at the worker"
    for session_id in sessions:
        with pytest.raises(NotFound):
            clients["w-bob"].get_session(session_id)
    bob = OpenAI(base_url=gateway, api_key="bob-key", max_retries=0, timeout=120)

    with pytest.raises(NotFoundError):
        bob.responses.create(model="tiny", input="What was the code?", previous_response_id=first.id,
                             max_output_tokens=4)
    with pytest.raises(PermissionDeniedError):  # an end user cannot name another tenant at the edge either
        bob.with_options(default_headers={TENANT_HEADER: "alice"}).models.list()


def test_a_background_response_runs_for_its_caller_through_the_jobs_service(worker, gateway):
    """gateway -> jobs service -> Celery task -> worker: the job's session is the caller's."""
    from openai import OpenAI

    _, clients = worker
    alice = OpenAI(base_url=gateway, api_key="alice-key", max_retries=0, timeout=120)
    before = set(clients["w-alice"].list_sessions())
    response = alice.responses.create(model="tiny", input="Think it over.", background=True, max_output_tokens=4)
    deadline = time.monotonic() + 120
    while response.status in ("queued", "in_progress"):
        assert time.monotonic() < deadline, "the background response did not end"
        time.sleep(0.2)
        response = alice.responses.retrieve(response.id)
    assert response.status in ("completed", "incomplete"), response
    made = [s for s in set(clients["w-alice"].list_sessions()) - before if s.startswith("job-")]
    assert made, "the job's session lives in alice's tenant"
    assert not [s for s in clients["w-jobs"].list_sessions() if s.startswith("job-")]  # not the service's


@pytest.fixture(scope="module")
def agent(tmp_path_factory, worker, jobs, database_url):  # noqa: F811 - fixtures
    from foundation.clients.agent import AgentClient

    root = tmp_path_factory.mktemp("propagation-agent")
    (root / "keys.json").write_text(json.dumps(EDGE_KEYS))
    env = child_env()
    env.update({"DSV4_AGENT_WORKER_API_KEY": "w-agent", "DSV4_AGENT_JOBS_API_KEY": "j-agent"})
    process = Process([sys.executable, "-m", "agent_runtime", "serve", "--port", "0", "--worker", worker[0],
                       "--jobs", jobs, "--database", database_url, "--api-keys", str(root / "keys.json")], env,
                      root / "agent.log")
    target = "127.0.0.1:" + process.wait_for(r"agent service on 127\.0\.0\.1:(\d+)").group(1)
    clients = {key: AgentClient(target, api_key=key, timeout=120) for key in EDGE_KEYS}
    yield clients
    for client in clients.values():
        client.close()
    process.stop()


def test_the_agent_service_acts_for_the_sessions_tenant(worker, agent):
    _, clients = worker
    session = agent["alice-key"].create_session("trip", system_prompt="You plan trips.")
    events = list(agent["alice-key"].run_turn("trip", "Hello", mode="non-think", sampling=SHORT))
    assert isinstance(events[-1], TurnDone), events[-1]
    worker_session = agent["alice-key"].get_session("trip").worker_session_id or session.worker_session_id
    assert clients["w-alice"].get_session(worker_session).tokens > 0  # turns ran in alice's tenant at the worker
    with pytest.raises(NotFound):
        clients["w-bob"].get_session(worker_session)
    with pytest.raises(NotFound):
        clients["w-agent"].get_session(worker_session)
    # agent -> jobs service -> Celery task -> worker: a Think Max step runs as a job, on a session of alice's.
    events = list(agent["alice-key"].run_turn("trip", "Think hard.", mode="think-max", sampling=SHORT))
    assert isinstance(events[-1], TurnDone), events[-1]
    think_max_session = agent["alice-key"].get_session("trip").worker_session_id
    assert think_max_session != worker_session and clients["w-alice"].get_session(think_max_session).think_max
    with pytest.raises(NotFound):
        clients["w-agent"].get_session(think_max_session)


def test_a_plain_key_naming_another_tenant_is_refused_by_the_jobs_service(jobs):
    from foundation.clients.jobs import JobsClient

    with JobsClient(jobs, api_key="j-bob") as client, acting_for("alice"), pytest.raises(PermissionDenied):
        client.list()
