"""The platform's processes on one machine: each service runs as its own child process (as in deployment), configured
only through its settings' environment variables, with its output in a log file under the data directory. A child is
ready when it prints the line that says where it serves."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.embedded.settings import EmbeddedSettings

ROOT = Path(__file__).resolve().parents[2]


def free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


@dataclass
class Child:
    """One service process: its command, environment, the line that says it is ready, and its log."""

    name: str
    args: list[str]
    env: dict[str, str]
    ready: str  # a regular expression its output matches once it serves
    log: Path
    process: subprocess.Popen | None = None
    _offset: int = 0

    def start(self) -> Child:
        self._offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as out:
            # Its own process group: Ctrl-C reaches the launcher only, which stops the children in order.
            self.process = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(self.ready, self._output()):
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.process.returncode}); its log {self.log} ends:\n"
                                   f"{self._output()[-3000:]}")
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready after {timeout:.0f} s; see {self.log}")

    def stop(self, grace_s: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)  # each service drains on SIGTERM
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def _output(self) -> str:
        with open(self.log, "rb") as log:
            log.seek(self._offset)
            return log.read().decode("utf-8", "replace")


@dataclass
class Platform:
    """The embedded platform's children, started in dependency order and stopped in reverse."""

    settings: EmbeddedSettings
    children: dict[str, Child] = field(default_factory=dict)
    endpoints: dict[str, str] = field(default_factory=dict)

    def start(self) -> Platform:
        s, data = self.settings, Path(self.settings.data_dir).resolve()
        (data / "logs").mkdir(parents=True, exist_ok=True)
        ports = {name: port or free_port(s.host) for name, port in (
            ("worker", s.worker_port), ("jobs", s.jobs_port), ("agent", s.agent_port), ("gateway", s.gateway_port))}
        worker, jobs = f"{s.host}:{ports['worker']}", f"{s.host}:{ports['jobs']}"
        self.endpoints = {"model worker (gRPC)": worker, "jobs (gRPC)": jobs,
                          "agent service (gRPC)": f"{s.host}:{ports['agent']}",
                          "gateway (OpenAI HTTP)": f"http://{s.host}:{ports['gateway']}/v1"}
        jobs_env = {"DATABASE_URL": f"sqlite:///{data / 'jobs.db'}",
                    "BROKER_URL": f"sqla+sqlite:///{data / 'broker.db'}", "WORKER_TARGET": worker,
                    "RESULT_STORE": str(data / "job-results"), "HOST": s.host, "PORT": str(ports["jobs"]),
                    "PROGRESS_EVERY_TOKENS": "8"}  # a lively progress bar for the demo's short requests
        python = sys.executable
        self._add("worker", [python, "-m", "model_worker", "serve"], "DSV4_WORKER_", {
            "CONFIG": s.config, "CHECKPOINT": s.checkpoint or "", "HOST": s.host, "PORT": str(ports["worker"]),
            "SESSION_STORE": str(data / "sessions")}, r"model worker serving \S+ on ")
        self._add("jobs", [python, "-m", "services.jobs", "serve"], "DSV4_JOBS_", jobs_env, r"jobs service on ")
        self._add("celery", [python, "-m", "celery", "-A", "services.jobs.celery_app", "worker", "-Q",
                             "think_max,default", "-P", "threads", "-c", str(s.celery_concurrency), "-B", "-s",
                             str(data / "celerybeat-schedule"), "-n", "embedded@%h", "--without-gossip",
                             "--without-mingle", "-l", "info"], "DSV4_JOBS_", jobs_env, r"ready\.")
        self._add("agent", [python, "-m", "agent_runtime", "serve"], "DSV4_AGENT_", {
            "DATABASE_URL": f"sqlite:///{data / 'agent.db'}", "WORKERS": worker, "JOBS_TARGET": jobs,
            "HOST": s.host, "PORT": str(ports["agent"]), "TOOL_PLUGINS": "services.embedded.tools:register"},
            r"agent service on ")
        self._add("gateway", [python, "-m", "services.gateway"], "DSV4_GATEWAY_", {
            "DATABASE_URL": f"sqlite:///{data / 'gateway.db'}", "FILES_DIR": str(data / "gateway-files"),
            "WORKERS": worker, "JOBS_TARGET": jobs, "HOST": s.host, "PORT": str(ports["gateway"])}, r"gateway on ")
        try:  # the worker first (the gateway asks it for the model's name at start), then the rest at once
            self.children["worker"].start().wait_ready(s.start_timeout_s)
            rest = [child.start() for name, child in self.children.items() if name != "worker"]
            for child in rest:
                child.wait_ready(s.start_timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def restart(self, name: str) -> None:
        """Stop a service and start it again on the same address (the demo restarts the model worker)."""
        child = self.children[name]
        child.stop()
        child.start().wait_ready(self.settings.start_timeout_s)

    def stop(self) -> None:
        for child in reversed(self.children.values()):
            child.stop()

    def _add(self, name: str, args: list[str], prefix: str, settings: Mapping[str, str], ready: str) -> None:
        log = Path(self.settings.data_dir).resolve() / "logs" / f"{name}.log"
        self.children[name] = service(name, args, prefix, settings, ready, log)


def service(name: str, args: list[str], prefix: str, settings: Mapping[str, str], ready: str, log: Path) -> Child:
    """A service's child process, configured by its settings' environment variables (`prefix` + key; empty values
    left out)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    env.update({f"{prefix}{key}": value for key, value in settings.items() if value})
    return Child(name, args, env, ready, log)
