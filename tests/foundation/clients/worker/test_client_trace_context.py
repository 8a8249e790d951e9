"""Every call of the platform's clients carries the caller's current trace as W3C `traceparent` metadata beside the
bearer key (policy.call_metadata, used by the blocking and the asyncio clients alike); with no trace, only the key."""

from __future__ import annotations

from opentelemetry import trace

from foundation.clients.worker import policy


def test_a_call_carries_the_current_span_as_its_parent(spans):
    with trace.get_tracer("test").start_as_current_span("caller") as caller:
        metadata = dict(policy.call_metadata(policy.auth_metadata("key-1")))
    context = caller.get_span_context()
    assert metadata["authorization"] == "Bearer key-1"
    assert metadata["traceparent"] == f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def test_without_a_trace_only_the_key_goes():
    assert policy.call_metadata(policy.auth_metadata("key-1")) == (("authorization", "Bearer key-1"),)
    assert policy.call_metadata(()) == ()
