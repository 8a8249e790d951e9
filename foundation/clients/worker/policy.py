"""How both clients call the worker: channel options, TLS, the metadata (bearer key, trace context), deadlines and
retries.

Retries happen only on UNAVAILABLE (the call most likely never reached a live server) and only where repeating the
call cannot duplicate an effect the caller saw: a unary call, or a stream before its first response. A call's
`timeout` is one deadline over all its attempts and backoff sleeps, not a fresh one per attempt.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from opentelemetry import propagate

from foundation import tenancy

MIB = 1 << 20
MAX_MESSAGE_BYTES = 256 * MIB  # a million-token prompt is a few MiB of ids or text; exports arrive in chunks
MAX_RETRIES = 10
MAX_BACKOFF_S = 5.0

DEFAULT_CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # Keepalive: a long prefill sends nothing for minutes; pings keep NATs and proxies from dropping the stream and
    # notice a dead worker within ~40 s. The server must permit pings this often (see the report / server options).
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # gRPC's reconnect backoff grows to 120 s by default: a worker back after an outage would be seen up (and routed
    # to again) that late. Reconnect attempts are one cheap handshake each.
    ("grpc.max_reconnect_backoff_ms", 5_000),
)


def channel_options(extra: Sequence[tuple[str, Any]] | None = None) -> list[tuple[str, Any]]:
    """The defaults with the caller's options on top (a caller's key replaces the default's)."""
    options = dict(DEFAULT_CHANNEL_OPTIONS)
    options.update(dict(extra or ()))
    return list(options.items())


def auth_metadata(api_key: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {api_key}"),) if api_key else ()


def call_metadata(auth: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """A call's metadata: the bearer key, the tenant the caller acts for (`tenancy.acting_for`) and its current trace
    context (W3C `traceparent`), read when the call starts, so the server acts for the end user and its span
    continues the caller's trace. Without either only the key goes."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    tenant = tenancy.acting_tenant()
    return auth + (((tenancy.TENANT_HEADER, tenant),) if tenant else ()) + tuple(carrier.items())


class Deadline:
    """One deadline for a call's attempts; None means none (a timeout of None or infinity)."""

    def __init__(self, timeout: float | None) -> None:
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self._end = None if timeout is None or math.isinf(timeout) else time.monotonic() + timeout

    def remaining(self) -> float | None:
        return None if self._end is None else max(0.0, self._end - time.monotonic())


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 3
    backoff: float = 0.2

    def __post_init__(self) -> None:
        if not 0 <= self.retries <= MAX_RETRIES:
            raise ValueError(f"retries must be in [0, {MAX_RETRIES}], got {self.retries}")
        if not 0 <= self.backoff <= MAX_BACKOFF_S:
            raise ValueError(f"backoff must be in [0, {MAX_BACKOFF_S}] seconds, got {self.backoff}")

    def delay(self, error: grpc.RpcError, attempt: int, deadline: Deadline) -> float | None:
        """Seconds to wait before retrying after attempt `attempt` (0-based) failed; None: do not retry."""
        code = error.code() if callable(getattr(error, "code", None)) else None
        if code != grpc.StatusCode.UNAVAILABLE or attempt >= self.retries:
            return None
        # Exponential, capped, with jitter so clients that lost one worker together do not return together.
        delay = min(MAX_BACKOFF_S, self.backoff * 2**attempt) * random.uniform(0.5, 1.0)
        remaining = deadline.remaining()
        if remaining is not None and delay >= remaining:
            return None  # no time left for another attempt: report the failure rather than a deadline
        return delay


def tls_credentials(ca: str | None = None, cert: str | None = None, key: str | None = None) -> grpc.ChannelCredentials:
    """Channel credentials from PEM files: `ca` verifies the server (default: the system roots); `cert` and `key`
    are this client's identity for a server that requires mutual TLS."""
    if (cert is None) != (key is None):
        raise ValueError("a client certificate needs its key (give both cert and key, or neither)")

    def read(path: str | None) -> bytes | None:
        return None if path is None else Path(path).read_bytes()

    return grpc.ssl_channel_credentials(root_certificates=read(ca), private_key=read(key), certificate_chain=read(cert))


def tls_client_options(ca: str | None = None, cert: str | None = None, key: str | None = None,
                       server_name: str | None = None) -> dict[str, Any]:
    """A client's keyword arguments (`credentials`, `channel_options`) for a caller's TLS settings: TLS once a CA
    bundle or a client certificate is named (`tls_credentials`; the files are read now, so a missing one fails at
    start, not at the first call), `server_name` the name the server's certificate must carry in place of the host
    dialled. Nothing named: {} (plaintext)."""
    if not (ca or cert or key):
        if server_name:
            raise ValueError("a TLS server name needs TLS: name a CA bundle (or a client certificate) too")
        return {}
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    return {"credentials": tls_credentials(ca, cert, key), "channel_options": options}


def worker_tls(settings: Any) -> dict[str, Any]:
    """`tls_client_options` from a model worker caller's settings (the gateway's, the agent service's, the jobs
    runner's): their worker_tls_ca, worker_tls_cert, worker_tls_key and worker_tls_server_name."""
    return tls_client_options(settings.worker_tls_ca, settings.worker_tls_cert, settings.worker_tls_key,
                              settings.worker_tls_server_name)
