"""The jobs service's settings: environment variables `DSV4_JOBS_*` (or a `.env`-style file); every one has a
default that runs embedded (SQLite next to the data, Redis on localhost)."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from foundation.clients.worker.settings import WorkerTlsSettings
from foundation.readiness import ReadinessSettings
from foundation.webhooks.settings import WebhookSettings
from services.jobs.job_store import MAX_ATTEMPTS
from services.jobs.spec import DEFAULT_QUEUE, BatchLimits
from services.openai_shapes import InputLimits

_BATCH, _INPUT = BatchLimits(), InputLimits()


class JobsSettings(WorkerTlsSettings, ReadinessSettings, WebhookSettings):
    model_config = SettingsConfigDict(env_prefix="DSV4_JOBS_", env_file=None, extra="ignore",
                                      cli_shortcuts={"api-keys-file": "api-keys"})

    database_url: str = Field("sqlite:///data/jobs.db", description="SQLAlchemy URL: PostgreSQL in deployment")
    broker_url: str = Field("redis://127.0.0.1:6379/0", description="Celery broker: redis://, amqp:// or "
                            "sqla+sqlite:///... (embedded)")
    worker_target: str = Field("127.0.0.1:50051", description="model worker gRPC addresses, comma-separated")
    worker_registry: str | None = Field(None, description="worker registry, redis://HOST:PORT/DB: live workers, "
                                        "their loads and hot sessions; none: the `worker_target` addresses")
    host: str = Field("127.0.0.1", description="address the jobs gRPC service serves on")
    port: int = Field(50061, description="the jobs gRPC port; 0: any free port (printed)")
    api_keys_file: str | None = Field(None, description="JSON file {key: tenant}; without it every caller is the "
                                      "default tenant")
    tls_cert: str | None = Field(None, description="PEM certificate chain: the gRPC service serves TLS (with "
                                 "tls_key)")
    tls_key: str | None = Field(None, description="PEM private key of tls_cert")
    tls_client_ca: str | None = Field(None, description="PEM CA bundle: the gRPC service requires client "
                                      "certificates it signed (mutual TLS)")
    worker_api_key: str | None = Field(None, description="API key for the model worker, if it requires one")
    result_store: str = Field("data/job-results", description="directory for outputs over the inline limit")
    inline_output_bytes: int = Field(64 << 10, description="outputs larger than this are stored outside the row")
    lease_seconds: float = Field(60.0, gt=0, description="a running request's lease; renewed while it streams")
    requeue_after_seconds: float = Field(300.0, gt=0, description="a queued request not claimed by then is "
                                         "published again (its message may have been lost)")
    reap_every_seconds: float = Field(15.0, gt=0, description="how often beat runs the reaper (expired leases, "
                                      "lost messages, expiry, webhooks)")
    longest_job_seconds: int = Field(6 * 3600, gt=0, description="the longest a single request may run")
    visibility_timeout_seconds: int | None = Field(None, description="broker redelivery timeout; default: the "
                                                   "longest job plus an hour")
    completion_window_seconds: int = Field(24 * 3600, gt=0, description="default expiry window of a batch")
    progress_every_tokens: int = Field(64, gt=0, description="tokens between progress and lease updates")
    worker_retries: int = Field(20, ge=0, description="retries of a request while the model worker is unavailable")
    max_attempts: int = Field(MAX_ATTEMPTS, ge=1, description="attempts of a request that fail otherwise (an "
                              "exception, its worker process dying) before it ends failed with its last error; a "
                              "request the worker's call cannot carry fails at once")
    webhook_queue: str = Field(DEFAULT_QUEUE, pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Celery queue of "
                               "webhook deliveries; another than the default needs a worker consuming it (-Q)")
    metrics_port: int | None = Field(None, ge=0, description="serve Prometheus metrics over HTTP on this port at "
                                     "`host`: the gRPC service's (batches submitted) or a Celery worker's (requests "
                                     "run; a prefork pool needs PROMETHEUS_MULTIPROC_DIR); 0: any free port")

    max_batch_requests: int = Field(_BATCH.max_requests, gt=0, description="requests in one batch (default 50,000); "
                                    "past it the batch is refused whole, RESOURCE_EXHAUSTED")
    max_batch_bytes: int = Field(_BATCH.max_bytes, gt=0, description="bytes of one batch, JSONL or typed (default "
                                 "200 MiB, under the gRPC message limit); past it the batch is refused whole, "
                                 "RESOURCE_EXHAUSTED")
    max_request_bytes: int = Field(_BATCH.max_request_bytes, gt=0, description="bytes of one request: a JSONL line, "
                                   "or a typed request serialized (default 8 MiB); past it that line is invalid")
    max_json_depth: int = Field(_INPUT.max_json_depth, gt=1, description="how deep a line's JSON may nest "
                                "(default 64); deeper lines are invalid")
    max_messages: int = Field(_INPUT.max_messages, gt=0, description="messages in one request (default 10,000)")
    max_tools: int = Field(_INPUT.max_tools, gt=0, description="tools in one request (default 128)")
    max_schema_bytes: int = Field(_INPUT.max_schema_bytes, gt=0, description="bytes of each JSON schema in a "
                                  "request: a tool's parameters, its response format's (default 64 KiB)")

    def batch_limits(self) -> BatchLimits:
        return BatchLimits(self.max_batch_requests, self.max_batch_bytes, self.max_request_bytes, InputLimits(
            self.max_messages, self.max_tools, self.max_schema_bytes, self.max_json_depth))

    @model_validator(mode="after")
    def _visibility_outlasts_jobs(self) -> JobsSettings:
        if self.visibility_timeout_seconds is None:
            self.visibility_timeout_seconds = self.longest_job_seconds + 3600
        if self.visibility_timeout_seconds <= self.longest_job_seconds:
            raise ValueError("visibility_timeout_seconds must exceed longest_job_seconds, or the broker hands a "
                             "running job to a second worker")
        return self
