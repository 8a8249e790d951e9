"""Webhook signatures by the Standard Webhooks convention (https://www.standardwebhooks.com): each delivery carries
`webhook-id` (the event's, the same on every retry, so a receiver can drop duplicates), `webhook-timestamp` (unix
seconds of the attempt, so it can refuse replays) and `webhook-signature`: `v1,` and the base64 HMAC-SHA256 of
`{id}.{timestamp}.{body}` under the tenant's secret. While a rotated secret is in its grace period both sign, the
signatures separated by a space, so a receiver holding either one accepts the delivery."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32  # the convention asks for 24 to 64


def new_secret() -> str:
    """A random secret in the convention's form: `whsec_` and the base64 of its bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    digest = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(signing_secrets: Sequence[str], message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three headers of one delivery, signed by every secret given (the current one first)."""
    return {"webhook-id": message_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": " ".join(signature(s, message_id, timestamp, body) for s in signing_secrets)}
