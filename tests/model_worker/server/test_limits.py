"""Per-tenant token buckets, on a fake clock."""

from __future__ import annotations

import pytest

from foundation.limits import RateLimited, TokenRates


def test_input_is_refused_while_short_and_output_is_charged_after() -> None:
    now = [0.0]
    rates = TokenRates(rate=100, burst_seconds=10, clock=lambda: now[0])  # 1,000 tokens of burst
    rates.admit("a", 600)
    rates.admit("b", 1000)  # tenants have their own buckets
    rates.charge("a", 300)  # 100 left
    with pytest.raises(RateLimited) as refused:
        rates.admit("a", 400)
    assert refused.value.retry_after == pytest.approx(3.0)
    now[0] = 3.0
    rates.admit("a", 400)
    now[0] = 100.0
    rates.admit("a", 5000)  # larger than the burst: a full bucket is enough, and it goes negative
    with pytest.raises(RateLimited) as refused:
        rates.admit("a", 1)
    assert refused.value.retry_after == pytest.approx(40.01)
    with pytest.raises(ValueError):
        TokenRates(rate=0)
