"""The gateway's settings: environment variables `DSV4_GATEWAY_*` (or a `.env`-style file), command-line flags over
them; every one has a default that runs embedded (SQLite and files under data/, one local model worker)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from foundation.clients.jobs import JobsTlsSettings
from foundation.clients.worker.settings import WorkerTlsSettings
from foundation.readiness import ReadinessSettings
from services.openai_shapes import InputLimits


class GatewaySettings(WorkerTlsSettings, JobsTlsSettings, ReadinessSettings):
    model_config = SettingsConfigDict(env_prefix="DSV4_GATEWAY_", env_file=None, extra="ignore", cli_shortcuts={
        "workers": "worker", "jobs-target": "jobs", "database-url": "database", "api-keys-file": "api-keys"})

    host: str = Field("127.0.0.1", description="address to serve HTTP on")
    port: int = Field(8000, description="HTTP port; 0: any free port (printed)")
    workers: str = Field("127.0.0.1:50051", description="model worker gRPC addresses, comma-separated")
    worker_registry: str | None = Field(None, description="worker registry, redis://HOST:PORT/DB: live workers, "
                                        "their loads and hot sessions; none: the `workers` addresses")
    worker_api_key: str | None = Field(None, description="API key for the model workers, if they require one")
    jobs_target: str | None = Field(None, description="the jobs service's gRPC address (batches, background "
                                    "responses); without it those endpoints answer 503")
    jobs_api_key: str | None = Field(None, description="API key for the jobs service")
    database_url: str = Field("sqlite:///data/gateway.db", description="SQLAlchemy URL of the gateway's tables "
                              "(stored responses, files)")
    files_dir: str = Field("data/gateway-files", description="where uploaded files' bytes are kept")
    api_keys_file: str | None = Field(None, description="JSON file {key: tenant}; without it every caller is the "
                                      "default tenant")
    model_name: str | None = Field(None, description="the model name clients use (default: the worker's)")
    max_request_bytes: int = Field(32 << 20, gt=0, description="largest request body (default 32 MiB), counted as "
                                   "it arrives, chunked or not; past it 413. It bounds the messages' bytes too")
    max_file_bytes: int = Field(200 << 20, gt=0, description="largest uploaded file (default 200 MiB); its upload "
                                "may be 1 MiB more (the form's other fields); past it 413")
    max_json_depth: int = Field(InputLimits.max_json_depth, gt=1, description="how deep a request's JSON may nest "
                                "(default 64), tool-call arguments given as JSON text included; past it 400")
    max_messages: int = Field(InputLimits.max_messages, gt=0, description="messages (or input items) in one "
                              "request (default 10,000); past it 400")
    max_tools: int = Field(InputLimits.max_tools, gt=0, description="tools in one request (default 128); past it 400")
    max_schema_bytes: int = Field(InputLimits.max_schema_bytes, gt=0, description="bytes of each JSON schema: a "
                                  "tool's parameters, a response format's schema (default 64 KiB); past it 400")
    max_choices: int = Field(8, gt=0, description="choices one chat completion may ask for (`n`, default 8; the "
                             "prompt is prefilled once for all); past it 400")
    max_requests_per_tenant: int | None = Field(None, gt=0, description="generations a tenant may run at once")
    tokens_per_second_per_tenant: float | None = Field(None, gt=0, description="token bucket per tenant "
                                                       "(10 s of burst)")
    mode_policy: str | None = Field(None, description="a request that names no reasoning effort runs in the mode "
                                    "this policy picks (the agent service's: `default`, or package.module:object); "
                                    "unset: in Non-think")
    thinking_signing_key: str | None = Field(None, description="secret the gateway signs the thinking blocks of "
                                             "/v1/messages with, and verifies those sent back; unset: one made at "
                                             "start (set it alike on every gateway of a deployment)")
    background_poll_seconds: float = Field(0.5, gt=0, description="how often a background response's job is "
                                           "checked while a caller polls it")

    def input_limits(self) -> InputLimits:
        return InputLimits(self.max_messages, self.max_tools, self.max_schema_bytes, self.max_json_depth)
