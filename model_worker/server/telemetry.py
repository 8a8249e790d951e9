"""What the worker reports: one OpenTelemetry span per Generate following the GenAI semantic conventions (the
caller's trace continues through W3C `traceparent` metadata), and Prometheus metrics (requests, time to first token,
inter-token latency, tokens, session reuse and rebuilds, speculative drafts and acceptance, KV bytes per tier)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from opentelemetry import propagate, trace
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

TRACER = trace.get_tracer("dsv4.model_worker")
_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60)


class Metrics:
    """The worker's Prometheus metrics, in their own registry (one per runtime; tests make several)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("dsv4_requests", "Generate requests by finish reason", ["finish_reason"], registry=r)
        self.running = Gauge("dsv4_running_requests", "requests in the engine's batch", registry=r)
        self.waiting = Gauge("dsv4_waiting_requests", "requests waiting for admission", registry=r)
        self.ttft = Histogram("dsv4_time_to_first_token_seconds", "request start to first token",
                              buckets=_LATENCY_BUCKETS, registry=r)
        self.itl = Histogram("dsv4_inter_token_latency_seconds", "time between streamed tokens",
                             buckets=_LATENCY_BUCKETS, registry=r)
        self.prompt_tokens = Counter("dsv4_prompt_tokens", "input tokens appended", registry=r)
        self.prefilled_tokens = Counter("dsv4_prefilled_tokens", "input tokens computed", registry=r)
        self.reused_tokens = Counter("dsv4_reused_tokens", "tokens whose state came from a session or prefix",
                                     registry=r)
        self.completion_tokens = Counter("dsv4_completion_tokens", "tokens generated", registry=r)
        self.rebuilds = Counter("dsv4_session_rebuilds", "sessions re-prefilled from their token log", registry=r)
        self.draft_tokens = Counter("dsv4_draft_tokens", "speculative drafts verified", registry=r)
        self.accepted_draft_tokens = Counter("dsv4_accepted_draft_tokens", "speculative drafts kept", registry=r)
        self.kv_bytes = Gauge("dsv4_kv_bytes", "KV state bytes by tier", ["tier"], registry=r)
        self.prefix_cache = Counter("dsv4_prefix_cache_events", "prefix cache lookups (hit, miss) and evictions",
                                    ["event"], registry=r)
        self.prefix_cache_stored = Counter("dsv4_prefix_cache_checkpoints", "prefix checkpoints kept", registry=r)


@dataclass
class RequestClock:
    """Times one request's stream for the latency histograms."""

    metrics: Metrics
    start: float
    last: float | None = None

    def token(self) -> None:
        now = time.perf_counter()
        if self.last is None:
            self.metrics.ttft.observe(now - self.start)
        else:
            self.metrics.itl.observe(now - self.last)
        self.last = now


@contextmanager
def generate_span(metadata: Mapping[str, str], model: str, session_id: str, request_id: str,
                  temperature: float | None, max_tokens: int | None) -> Iterator[trace.Span]:
    """The Generate span, a child of the caller's trace when its metadata carries one."""
    attributes = {"gen_ai.operation.name": "chat", "gen_ai.system": "deepseek", "gen_ai.request.model": model,
                  "gen_ai.response.id": request_id}
    if session_id:
        attributes["gen_ai.conversation.id"] = session_id
    if temperature is not None:
        attributes["gen_ai.request.temperature"] = temperature
    if max_tokens is not None:
        attributes["gen_ai.request.max_tokens"] = max_tokens
    with TRACER.start_as_current_span(f"chat {model}", context=propagate.extract(dict(metadata)),
                                      kind=trace.SpanKind.SERVER, attributes=attributes) as span:
        yield span


def record_usage(span: trace.Span, metrics: Metrics, usage, finish_reason: str) -> None:
    """Usage on the span (GenAI names; reused tokens as cached input) and in the counters."""
    span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
    span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
    span.set_attribute("gen_ai.usage.cache_read.input_tokens", usage.reused_tokens)
    span.set_attribute("gen_ai.response.finish_reasons", [finish_reason])
    span.set_attribute("dsv4.usage.prefilled_tokens", usage.prefilled_tokens)
    span.set_attribute("dsv4.session.rebuilt", usage.session_rebuilt)
    metrics.requests.labels(finish_reason).inc()
    metrics.prompt_tokens.inc(usage.prompt_tokens)
    metrics.prefilled_tokens.inc(usage.prefilled_tokens)
    metrics.reused_tokens.inc(usage.reused_tokens)
    metrics.completion_tokens.inc(usage.completion_tokens)
    metrics.rebuilds.inc(int(usage.session_rebuilt))
    metrics.draft_tokens.inc(usage.draft_tokens)
    metrics.accepted_draft_tokens.inc(usage.accepted_draft_tokens)
