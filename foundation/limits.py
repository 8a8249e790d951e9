"""Per-tenant token rates: a token bucket per tenant refilled at `rate` tokens/s up to `burst` seconds' worth.
A request's input is charged when it starts (refused while the bucket is short); its output is charged as it
finishes, so a tenant that generated a lot waits before its next request instead of being cut off mid-stream."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateLimited(RuntimeError):
    """Over the tenant's token rate (RESOURCE_EXHAUSTED, with retry-after seconds)."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


RETRY_AFTER_SECONDS = 1.0  # what a refusal that passes in a moment (a full queue, a busy tenant) asks a caller to wait


class TenantLimit(RuntimeError):
    """The tenant already runs as many requests as it may (RESOURCE_EXHAUSTED: retry later)."""

    retry_after = RETRY_AFTER_SECONDS


class TokenRates:
    def __init__(self, rate: float, burst_seconds: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst_seconds <= 0:
            raise ValueError("token rate and burst must be positive")
        self.rate, self.capacity, self.clock = rate, rate * burst_seconds, clock
        self._buckets: dict[str, tuple[float, float]] = {}  # tenant -> (tokens, as of)
        self._lock = threading.Lock()

    def _level(self, tenant: str, now: float) -> float:
        tokens, since = self._buckets.get(tenant, (self.capacity, now))
        return min(self.capacity, tokens + (now - since) * self.rate)

    def admit(self, tenant: str, tokens: int) -> None:
        """Charge a request's input, or refuse it while the tenant's bucket is short (it may then go negative)."""
        with self._lock:
            now = self.clock()
            level = self._level(tenant, now)
            if level < min(tokens, self.capacity):  # a request larger than the burst needs a full bucket only
                wait = (min(tokens, self.capacity) - level) / self.rate
                raise RateLimited(f"over the tenant's {self.rate:g} tokens/s; retry in {wait:.1f} s", wait)
            self._buckets[tenant] = (level - tokens, now)

    def charge(self, tenant: str, tokens: int) -> None:
        """Charge generated tokens after the fact."""
        with self._lock:
            now = self.clock()
            self._buckets[tenant] = (self._level(tenant, now) - tokens, now)
