"""What every caller of the model workers configures to reach them over TLS (the gateway, the agent service, the
jobs runner): environment variables under each caller's own prefix (`DSV4_GATEWAY_WORKER_TLS_CA`, ...)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings


class WorkerTlsSettings(BaseSettings):
    worker_tls_ca: str | None = Field(None, description="PEM CA bundle that verifies the model workers: call them "
                                      "over TLS (a worker_tls_cert alone: TLS verified by the system's roots)")
    worker_tls_cert: str | None = Field(None, description="PEM certificate chain this service shows model workers "
                                        "that require mutual TLS (with worker_tls_key)")
    worker_tls_key: str | None = Field(None, description="PEM private key of worker_tls_cert")
    worker_tls_server_name: str | None = Field(None, description="the name the model workers' certificates carry, "
                                               "checked in place of the host of each worker's address (compose: "
                                               "workers register under container IDs no certificate names); "
                                               "none: that host. Needs TLS")
