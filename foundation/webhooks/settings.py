"""The webhook settings every service that sends webhooks has (under its own prefix: `DSV4_JOBS_WEBHOOK_*`,
`DSV4_AGENT_WEBHOOK_*`)."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings

from foundation.webhooks.delivery import WebhookPolicy
from foundation.webhooks.destinations import Destinations


class WebhookSettings(BaseSettings):
    webhook_timeout_seconds: float = Field(5.0, gt=0, description="the whole of one webhook delivery attempt: "
                                           "connect, TLS, request and the answer's status line")
    webhook_max_attempts: int = Field(8, ge=1, description="delivery attempts of a webhook event before it is given "
                                      "up (its last error is kept)")
    webhook_backoff_seconds: float = Field(30.0, gt=0, description="wait after a failed webhook attempt, doubled "
                                           "after each")
    webhook_backoff_max_seconds: float = Field(3600.0, gt=0, description="the longest wait between webhook attempts")
    webhook_allow_networks: str = Field("", description="comma-separated networks (10.0.0.0/8, fd00::/8, "
                                        "127.0.0.1) and host names (hooks.internal) webhooks may reach although "
                                        "they are loopback, private, link-local or otherwise not public; empty: "
                                        "public addresses only")
    webhook_secret_grace_seconds: float = Field(24 * 3600.0, ge=0, description="after a tenant's webhook secret "
                                                "is rotated, how long the previous one still signs too")

    def webhook_destinations(self) -> Destinations:
        return Destinations.parse(self.webhook_allow_networks)

    def webhook_policy(self) -> WebhookPolicy:
        return WebhookPolicy(self.webhook_destinations(), self.webhook_timeout_seconds, self.webhook_max_attempts,
                             self.webhook_backoff_seconds, self.webhook_backoff_max_seconds)

    @field_validator("webhook_allow_networks")
    @classmethod
    def _allow_list_parses(cls, entries: str) -> str:
        Destinations.parse(entries)  # a wrong entry stops the service at start, not its first delivery
        return entries
