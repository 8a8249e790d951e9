"""The jobs service's Prometheus metrics. The gRPC service counts what is submitted (SubmitMetrics); the Celery workers
count the requests they run to an end (RunMetrics). A prefork pool runs requests in child processes, which the
worker's one endpoint cannot read directly: with PROMETHEUS_MULTIPROC_DIR naming an existing directory of the
worker's own when it starts, every process writes its values there and the endpoint sums them (prometheus_client's
multiprocess mode). These are counters and histograms only, which it sums exactly, files of exited processes
included."""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.multiprocess import MultiProcessCollector

from services.jobs.job_store import USAGE_FIELDS, Outcome

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# A request runs for a second (a short non-thinking answer) to hours (a long Think Max job).
_RUN_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600)


class SubmitMetrics:
    """The jobs gRPC service's, in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.batches = Counter("dsv4_jobs_batches_submitted", "batches stored, by whether an agent's turn waits on "
                               "them", ["interactive"], registry=self.registry)
        self.requests = Counter("dsv4_jobs_requests_submitted", "request lines submitted, by whether they were "
                                "valid (the invalid ones are reported in their batch's errors)", ["valid"],
                                registry=self.registry)

    def submitted(self, valid: int, invalid: int, interactive: bool) -> None:
        self.batches.labels(str(interactive).lower()).inc()
        self.requests.labels("true").inc(valid)
        self.requests.labels("false").inc(invalid)


class RunMetrics:
    """A Celery worker process's, in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("dsv4_jobs_requests", "requests this worker ran to an end, by final status "
                                "(completed, failed, cancelled)", ["status"], registry=r)
        self.run_seconds = Histogram("dsv4_jobs_request_run_seconds", "a request's run, from its claim to its "
                                     "result", buckets=_RUN_BUCKETS, registry=r)
        self.tokens = Counter("dsv4_jobs_tokens", "tokens of the requests this worker ran, by kind", ["kind"],
                              registry=r)

    def ended(self, outcome: Outcome, seconds: float) -> None:
        self.requests.labels(outcome.status).inc()
        self.run_seconds.observe(seconds)
        for kind in USAGE_FIELDS:
            self.tokens.labels(kind.removesuffix("_tokens")).inc((outcome.usage or {}).get(kind, 0))


def worker_registry(metrics: RunMetrics, forks: bool) -> CollectorRegistry:
    """What a Celery worker's endpoint serves: every pool process's values in multiprocess mode, else this process's
    own (right when the tasks run here: the solo and threads pools). Raises when a prefork pool's children would go
    uncounted."""
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)
        return registry
    if forks:
        raise RuntimeError(f"a prefork pool runs requests in child processes; set {MULTIPROC_ENV} to a directory "
                           "of this worker's own before it starts, to serve their metrics")
    return metrics.registry
