"""The Celery app: a Think Max queue (served by GPU-backed workers) and a default queue, routed by reasoning mode;
long-task settings (late acks, no prefetch, a visibility timeout beyond the longest job, everywhere Celery reads it);
the task that runs one request, the task that delivers one batch's webhook (`webhook_queue`, the default queue
unless set), and the reaper that publishes again what a lost message or a dead worker left behind and the webhooks
due again.

    celery -A services.jobs.celery_app worker -Q think_max,default -B
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable

from celery import Celery
from celery.concurrency import get_implementation
from celery.signals import worker_init, worker_shutdown
from kombu import Exchange, Queue
from opentelemetry import propagate, trace

from foundation.blobs import open_blobs
from foundation.clients.worker import ResourceExhausted, Unavailable, WorkerClient
from foundation.metrics import serve_metrics
from foundation.registry import WorkerPool
from foundation.tracing import configure_tracing
from services.jobs.db import make_engine, sessions
from services.jobs.job_store import JobStore
from services.jobs.metrics import RunMetrics, worker_registry
from services.jobs.runner import AttemptFailed, Runner
from services.jobs.settings import JobsSettings
from services.jobs.spec import DEFAULT_QUEUE, THINK_MAX_QUEUE
from services.jobs.webhook_store import WebhookStore
from services.jobs.webhooks import WebhookSender

TRACER = trace.get_tracer("dsv4.jobs")


def priority(settings: JobsSettings, interactive: bool) -> int:
    """An agent's own Think Max turn goes before batch requests. RabbitMQ serves the highest number first; Redis's
    priority steps serve 0 first."""
    if settings.broker_url.startswith(("redis://", "rediss://")):
        return 0 if interactive else 6
    return 9 if interactive else 3


def transport_options(settings: JobsSettings) -> dict:
    """Redis redelivers unacknowledged messages after the visibility timeout (so it must outlast the longest job)
    and emulates priorities with one list per step. RabbitMQ redelivers when a consumer's connection drops, and takes
    priorities from x-max-priority on the queues. Its server-side `consumer_timeout` must outlast the longest job too.
    The embedded SQLAlchemy transport has neither; the lease and the reaper cover it."""
    if settings.broker_url.startswith(("redis://", "rediss://")):
        return {"visibility_timeout": settings.visibility_timeout_seconds, "priority_steps": list(range(10)),
                "sep": ":", "queue_order_strategy": "priority"}
    return {}


def celery_config(settings: JobsSettings) -> dict:
    transport = transport_options(settings)
    queues = [Queue(name, Exchange(name, type="direct"), routing_key=name, queue_arguments={"x-max-priority": 10})
              for name in dict.fromkeys((THINK_MAX_QUEUE, DEFAULT_QUEUE, settings.webhook_queue))]
    return dict(
        broker_url=settings.broker_url,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options=transport,
        result_backend_transport_options={"visibility_timeout": settings.visibility_timeout_seconds},
        task_ignore_result=True,  # SQL holds every outcome
        task_queues=queues,
        task_default_queue=DEFAULT_QUEUE,
        task_default_priority=priority(settings, interactive=False),
        task_soft_time_limit=settings.longest_job_seconds,
        task_time_limit=settings.longest_job_seconds + 60,
        # A delivery bounds its own exchange; the system resolver it calls first has only this bound.
        task_annotations={"jobs.deliver_webhook": {"soft_time_limit": settings.webhook_timeout_seconds + 30,
                                                   "time_limit": settings.webhook_timeout_seconds + 40}},
        broker_connection_retry_on_startup=True,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        beat_schedule={"reap": {"task": "jobs.reap", "schedule": settings.reap_every_seconds,
                                "options": {"queue": DEFAULT_QUEUE}}},
    )


settings = JobsSettings()
app = Celery("dsv4_jobs")
app.conf.update(celery_config(settings))
_resources: dict[int, tuple[JobStore, Runner]] = {}
_senders: dict[int, WebhookSender] = {}
run_metrics = RunMetrics()  # what this process's runs count (prefork children: each its own, summed at the endpoint)
metrics_endpoint = None  # the worker's metrics HTTP server, while it runs


@worker_init.connect
def _export_telemetry(sender, **_: object) -> None:
    """A Celery worker exports its spans where the environment says (prefork children keep the provider: the SDK
    restarts its export thread after a fork), and serves its metrics on `metrics_port`."""
    global metrics_endpoint
    configure_tracing("dsv4-jobs-worker")
    if settings.metrics_port is not None and metrics_endpoint is None:
        from celery.concurrency.prefork import TaskPool as PreforkPool

        try:
            registry = worker_registry(run_metrics, forks=issubclass(get_implementation(sender.pool_cls), PreforkPool))
        except RuntimeError as error:
            raise SystemExit(f"metrics_port: {error}") from error  # Celery would log an Exception and start anyway
        metrics_endpoint = serve_metrics(registry, settings.metrics_port, settings.host, "celery worker")


@worker_shutdown.connect
def _stop_metrics(**_: object) -> None:
    global metrics_endpoint
    if metrics_endpoint is not None:
        metrics_endpoint.shutdown()
        metrics_endpoint.server_close()
        metrics_endpoint = None


def configure(new: JobsSettings) -> None:
    """Use other settings in this process (the Celery CLI reads the environment when it imports this module)."""
    global settings
    settings = new
    app.conf.update(celery_config(new))
    _resources.clear()
    _senders.clear()


def resources() -> tuple[JobStore, Runner]:
    """This process's database engine, worker client and runner (made after the pool forks, never shared)."""
    pid = os.getpid()
    if pid not in _resources:
        from foundation.clients.worker.policy import worker_tls

        tls = worker_tls(settings)  # its PEM files read once per process, before anything else is opened
        store = JobStore(sessions(make_engine(settings.database_url)), settings.max_attempts,
                         settings.webhook_destinations())
        workers = WorkerPool.open(settings.worker_registry, settings.worker_target,
                                  lambda address: WorkerClient(address, api_key=settings.worker_api_key, retries=2,
                                                               **tls))
        runner = Runner(store, workers, owner=f"{socket.gethostname()}:{pid}", lease_s=settings.lease_seconds,
                        results=open_blobs(settings.result_store), inline_output_bytes=settings.inline_output_bytes,
                        check_every_tokens=settings.progress_every_tokens, metrics=run_metrics)
        _resources[pid] = store, runner
    return _resources[pid]


def webhook_sender() -> WebhookSender:
    """This process's webhook sender, on its store's database engine."""
    pid = os.getpid()
    if pid not in _senders:
        store, _ = resources()
        policy = settings.webhook_policy()
        _senders[pid] = WebhookSender(store, WebhookStore(store.sessions), policy)
    return _senders[pid]


def announce_webhooks(request_id: int | None = None) -> int:
    """One delivery message per batch whose webhook is due (with `request_id`: the batch it belongs to, if its
    end made one due). A message that finds its attempt taken or not due does nothing; one still queued when the
    reaper has announced the batch again a few times expires unrun, so a backlog holds few repeats."""
    sender = webhook_sender()
    due = sender.hooks.due(settings.webhook_max_attempts, request_id=request_id)
    for batch_id in due:
        deliver_webhook.apply_async((batch_id,), queue=settings.webhook_queue,
                                    expires=max(60.0, 4 * settings.reap_every_seconds))
    return len(due)


def publish(requests: Iterable[tuple[int, str]], interactive: bool = False, headers: dict[str, str] | None = None
            ) -> None:
    """One message per request on its queue, over one connection to the configured broker; the submitter's trace
    context rides in the task headers."""
    carrier: dict[str, str] = dict(headers or {})
    propagate.inject(carrier)
    with app.connection_for_write(settings.broker_url) as connection:
        producer = app.amqp.Producer(connection)
        for request_id, queue in requests:
            run_request.apply_async((request_id,), queue=queue, priority=priority(settings, interactive),
                                    headers=carrier, producer=producer)


class CeleryPublisher:
    """The use cases' `Publisher` (services/jobs/use_cases.py) on this app: messages to the configured broker.
    It looks the functions up when called, so a test that replaces them here replaces them for the use cases too."""

    def publish(self, requests: Iterable[tuple[int, str]], interactive: bool = False) -> None:
        publish(requests, interactive=interactive)

    def announce_webhooks(self) -> int:
        return announce_webhooks()


@app.task(name="jobs.run_request", bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def run_request(self, request_id: int) -> str:
    _, runner = resources()
    context = propagate.extract(_trace_headers(self.request))
    with TRACER.start_as_current_span("jobs.run_request", context=context,
                                      attributes={"dsv4.jobs.request_id": request_id}):
        try:
            outcome = runner.run(request_id)
        except (Unavailable, ResourceExhausted, AttemptFailed) as exc:  # back in the queue: run it again later
            if self.request.retries >= settings.worker_retries:
                raise  # the reaper publishes it again once it has waited `requeue_after_seconds`
            raise self.retry(exc=exc, countdown=min(2 ** self.request.retries, 60)) from exc
        announce_webhooks(request_id)  # when its end (or a claim that ended it) ended its batch
        return outcome


def _trace_headers(request) -> dict[str, str]:
    """W3C trace headers of the message: in `headers` when run locally, message properties on a worker."""
    carrier = dict(request.headers or {})
    for key in ("traceparent", "tracestate", "baggage"):
        value = getattr(request, key, None)
        if value:
            carrier.setdefault(key, value)
    return carrier


@app.task(name="jobs.deliver_webhook", acks_late=True)
def deliver_webhook(batch_id: str) -> str:
    """One attempt at a batch's webhook (services/jobs/webhooks.py)."""
    return webhook_sender().deliver(batch_id)


@app.task(name="jobs.reap")
def reap() -> int:
    store, _ = resources()
    again = store.reap(settings.requeue_after_seconds)
    for request_id, queue, trace_context in again:  # each joins its submitter's trace, as the first message did
        publish([(request_id, queue)], headers=trace_context)
    announce_webhooks()  # batches the reap ended, and attempts due again after their backoff
    return len(again)
