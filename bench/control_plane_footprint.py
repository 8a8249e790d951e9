"""What each control-plane service costs to start and to keep: its import time, its resident memory after serving one
request, and whether libtorch is mapped into it (the control plane should not load torch at all).

The services run as `python -m services.embedded` runs them (services/embedded/launcher.py: every service its own
process, SQLite, the embedded Celery broker, the `tiny` model worker). Each serves one request: a chat completion
through the gateway, an agent turn through the agent service, a batch line through the jobs service and its Celery
worker. Then, per service: VmRSS from /proc/PID/status, and every file mapped into it or into a process it started
(/proc/PID/maps; the agent service's tool sandbox included). Import time: the modules the service's command imports
before it serves, in a fresh interpreter each time (the median of --repeats; byte code compiled beforehand).

    .venv/bin/python bench/control_plane_footprint.py [--repeats 5] [--json OUT.json]

Another checkout measured with this environment (the tree on PYTHONPATH wins over the editable install, which
setuptools appends to sys.meta_path; the report prints the files it measured):

    cd ../before && PYTHONPATH=$PWD ../main/.venv/bin/python ../main/bench/control_plane_footprint.py

tests/integration/test_control_plane_without_torch.py asserts the libtorch part with the same functions."""

from __future__ import annotations

import argparse
import json
import os
import platform as host
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

# The modules each service's command imports before it serves (the launcher's child name -> modules).
SERVICES = {
    "gateway": ("services.gateway.__main__", "services.gateway.app"),
    "agent": ("agent_runtime.__main__", "agent_runtime.service.serve"),
    "jobs": ("services.jobs.cli", "services.jobs.serve"),
    "celery": ("services.jobs.celery_app",),
}
ENDED = ("completed", "failed", "expired", "cancelled")


def process_tree(pid: int) -> list[int]:
    """`pid` and every process it started, still running (from /proc/PID/task/*/children)."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                pending += [int(c) for c in (task / "children").read_text().split()]
            except OSError:  # the task ended while we looked
                continue
    return found


def torch_mappings(pid: int) -> list[str]:
    """The files of torch's libraries (libtorch*.so, torch/_C) mapped into `pid`."""
    paths = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        path = line.split(maxsplit=5)[5] if len(line.split(maxsplit=5)) == 6 else ""
        if "libtorch" in path or "/torch/_C" in path:
            paths.add(path)
    return sorted(paths)


def resident_kib(pid: int) -> int:
    """VmRSS of `pid`, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def _clients():
    """The gRPC clients, from their home in this tree (foundation.clients) or, in a tree from before it existed,
    their old one (the bench measures both)."""
    try:
        from foundation.clients.agent import AgentClient
        from foundation.clients.jobs import JobsClient
        from foundation.clients.worker import Sampling
    except ImportError:
        from agent_runtime.client import AgentClient
        from model_worker.client import Sampling
        from services.jobs.client import JobsClient
    return AgentClient, JobsClient, Sampling


def serve_one_each(endpoints: dict[str, str], timeout_s: float = 300.0) -> dict[str, str]:
    """One request per service, each to its end: what each answered."""
    agent_client, jobs_client, sampling = _clients()
    gateway = endpoints["gateway (OpenAI HTTP)"]
    body = {"model": "tiny", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8,
            "temperature": 0.0, "reasoning_effort": "none"}
    request = urllib.request.Request(f"{gateway}/chat/completions", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": "Bearer unused"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        reply = json.loads(response.read())
    served = {"gateway": f"chat completion: {reply['choices'][0]['finish_reason']}, "
                         f"{reply['usage']['completion_tokens']} tokens"}

    agent = agent_client(endpoints["agent service (gRPC)"], timeout=timeout_s)
    try:
        session = f"footprint-{uuid.uuid4().hex[:8]}"
        agent.create_session(session, system_prompt="You are brief.")
        kinds = [type(event).__name__ for event in agent.run_turn(
            session, "Say hello.", mode="non-think", max_steps=1, sampling=sampling(temperature=0.0, max_tokens=8))]
        if kinds[-1] != "TurnDone":
            raise RuntimeError(f"the agent turn ended with {kinds[-1]}")
        served["agent"] = f"agent turn: {len(kinds)} events, {kinds[-1]}"
    finally:
        agent.close()

    jobs = jobs_client(endpoints["jobs (gRPC)"], timeout=60)
    try:
        line = {"custom_id": "q0", "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": "tiny", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8,
                         "temperature": 0.0, "reasoning_effort": "non-think"}}
        batch = jobs.submit_jsonl(json.dumps(line))
        deadline = time.monotonic() + timeout_s
        while batch.status not in ENDED:
            if time.monotonic() > deadline:
                raise TimeoutError(f"batch {batch.id} still {batch.status}")
            time.sleep(0.2)
            batch = jobs.get(batch.id)
        if batch.request_counts.completed != 1:
            raise RuntimeError(f"batch {batch.id}: {batch.status}, {batch.request_counts}")
        served["jobs"] = served["celery"] = f"batch line: {batch.status}"
    finally:
        jobs.close()
    return served


def import_seconds(modules: tuple[str, ...], root: Path, repeats: int) -> dict:
    """The median wall and CPU time of importing `modules` in a fresh interpreter (and whether torch came with them).
    The CPU time is the steadier of the two on a busy machine."""
    code = ("import json, sys, time\nt, c = time.perf_counter(), time.process_time()\n" +
            "".join(f"import {m}\n" for m in modules) +
            "dt, dc = time.perf_counter() - t, time.process_time() - c\n"
            f"print(json.dumps({{'s': dt, 'cpu': dc, 'torch': 'torch' in sys.modules, "
            f"'file': sys.modules[{modules[-1]!r}].__file__}}))")
    env = {**os.environ, "PYTHONPATH": str(root)}
    runs = []
    for _ in range(repeats + 1):  # the first run compiles byte code; it does not count
        done = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                              check=True)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {"import_s": round(statistics.median(r["s"] for r in runs[1:]), 3),
            "import_cpu_s": round(statistics.median(r["cpu"] for r in runs[1:]), 3),
            "torch_imported": runs[-1]["torch"], "module_file": runs[-1]["file"]}


def measure(repeats: int) -> dict:
    from services.embedded.launcher import ROOT, Platform
    from services.embedded.settings import EmbeddedSettings

    report = {"tree": str(ROOT), "python": sys.version.split()[0], "machine": f"{host.node()} {host.machine()}, "
              f"{os.cpu_count()} CPUs", "date": time.strftime("%Y-%m-%d"), "services": {}}
    for name, modules in SERVICES.items():
        report["services"][name] = import_seconds(modules, ROOT, repeats)
    with tempfile.TemporaryDirectory(prefix="footprint-") as data:
        settings = EmbeddedSettings(data_dir=data, worker_port=0, jobs_port=0, agent_port=0, gateway_port=0,
                                    demo=False, celery_concurrency=1)
        platform = Platform(settings).start()
        try:
            served = serve_one_each(platform.endpoints)
            for name in [*SERVICES, "worker"]:
                pid = platform.children[name].process.pid
                tree = process_tree(pid)
                entry = report["services"].setdefault(name, {})
                entry.update(served=served.get(name, ""), rss_mib=round(resident_kib(pid) / 1024, 1),
                             processes=len(tree), libtorch=sorted({p for q in tree for p in torch_mappings(q)}))
        finally:
            platform.stop()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="fresh interpreters per import time (median)")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    report = measure(args.repeats)
    print(f"tree {report['tree']}; Python {report['python']}; {report['machine']}; {report['date']}")
    print(f"{'service':<8} {'import s':>8} {'(CPU s)':>8} {'torch imported':>14} {'RSS MiB':>8} "
          f"{'libtorch mapped':>15}  served")
    nan = float("nan")
    for name, entry in report["services"].items():
        print(f"{name:<8} {entry.get('import_s', nan):>8.3f} {entry.get('import_cpu_s', nan):>8.3f} "
              f"{str(entry.get('torch_imported', '-')):>14} {entry['rss_mib']:>8.1f} "
              f"{'yes' if entry['libtorch'] else 'no':>15}  {entry['served']}")
    for name, entry in report["services"].items():
        if "module_file" in entry:
            print(f"  {name} imported {entry['module_file']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
