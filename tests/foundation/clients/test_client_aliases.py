"""The clients moved to `foundation.clients`; the import paths the README shows stay as aliases of the same objects,
so an `except` or `isinstance` on either name matches."""

import importlib

import pytest


@pytest.mark.parametrize("old, new", [
    ("model_worker.client", "foundation.clients.worker"),
    ("model_worker.client.errors", "foundation.clients.worker.errors"),
    ("model_worker.client.types", "foundation.clients.worker.types"),
    ("services.jobs.client", "foundation.clients.jobs"),
    ("agent_runtime.client", "foundation.clients.agent"),
])
def test_old_client_paths_are_the_new_modules(old, new):
    old_module, new_module = importlib.import_module(old), importlib.import_module(new)
    if old == "model_worker.client":
        assert set(old_module.__all__) == set(new_module.__all__)
        assert all(getattr(old_module, name) is getattr(new_module, name) for name in new_module.__all__)
    else:
        assert old_module is new_module


def test_the_readme_imports_still_work():
    from agent_runtime.client import AgentClient
    from foundation.clients.agent import AgentClient as agent_client
    from foundation.clients.jobs import JobsClient as jobs_client
    from foundation.clients.worker import Sampling as sampling
    from foundation.clients.worker import WorkerClient as worker_client
    from model_worker.client import Sampling, WorkerClient
    from services.jobs.client import JobsClient

    assert (AgentClient, JobsClient, Sampling, WorkerClient) == (agent_client, jobs_client, sampling, worker_client)
