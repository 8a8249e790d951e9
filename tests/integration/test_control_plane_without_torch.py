"""The control plane runs without torch, proven in running processes: the platform's services started as
`python -m services.embedded` starts them (each its own process, on its documented command), each serves one request
(a chat completion through the gateway, an agent turn through the agent service, a batch line through the jobs
service and its Celery worker), and then no libtorch is mapped into the gateway, the agent service, the jobs service,
the Celery worker, or any process they started (the agent's tool sandbox). The model worker, which runs the engine,
has it mapped: the check sees libtorch where it is."""

from __future__ import annotations

from bench.control_plane_footprint import process_tree, serve_one_each, torch_mappings
from services.embedded.launcher import Platform
from services.embedded.settings import EmbeddedSettings

CONTROL_PLANE = ("gateway", "agent", "jobs", "celery")


def test_the_control_plane_serves_with_no_libtorch_mapped(tmp_path):
    settings = EmbeddedSettings(data_dir=str(tmp_path / "data"), worker_port=0, jobs_port=0, agent_port=0,
                                gateway_port=0, demo=False, celery_concurrency=1)
    platform = Platform(settings).start()
    try:
        served = serve_one_each(platform.endpoints)
        assert set(served) == set(CONTROL_PLANE), served
        mapped = {name: {pid: torch_mappings(pid) for pid in process_tree(platform.children[name].process.pid)}
                  for name in CONTROL_PLANE}
        assert {name: {pid: paths for pid, paths in pids.items() if paths} for name, pids in mapped.items()} == {
            name: {} for name in CONTROL_PLANE}
        assert any("libtorch" in path for path in torch_mappings(platform.children["worker"].process.pid))
    finally:
        platform.stop()
