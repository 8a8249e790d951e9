"""Where every service's spans go: OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the OpenTelemetry SDK's standard
variables: OTEL_EXPORTER_OTLP_PROTOCOL grpc (default) or http/protobuf, OTEL_SERVICE_NAME), and/or the console.
Without either, spans are not exported (the API's no-op provider stays). And how a gRPC service continues its
callers' traces (the clients send them: foundation.clients.worker.policy.call_metadata)."""

from __future__ import annotations

import os

import grpc
from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter


def tracer_provider(service: str, console: bool = False) -> TracerProvider | None:
    """A provider exporting as the environment and `console` ask, named OTEL_SERVICE_NAME or `service`."""
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if not endpoint and not console:
        return None
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME", service)}))
    if endpoint:
        provider.add_span_processor(BatchSpanProcessor(_otlp_exporter()))
    if console:
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    return provider


def _otlp_exporter():
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()  # endpoint, headers, TLS and timeout from the OTEL_EXPORTER_OTLP_* variables
    raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: this platform exports OTLP over grpc")


def configure_tracing(service: str, console: bool = False) -> None:
    """Install the process-wide provider at a service's start (once per process)."""
    provider = tracer_provider(service, console)
    if provider is not None:
        trace.set_tracer_provider(provider)


def grpc_server_interceptors(own_spans: tuple[str, ...] = ()) -> list[grpc.ServerInterceptor]:
    """A SERVER span per RPC that continues the caller's trace (its `traceparent` metadata) and stays current while
    the handler runs, a streaming one's too, so what the handler calls and starts are its children. Health checks
    and reflection get none: probes every few seconds would bury the traces. Neither do the methods in `own_spans`
    (full names), which open their own server span (the worker's Generate, with its GenAI attributes)."""
    from opentelemetry.instrumentation.grpc import filters, server_interceptor

    skipped = filters.any_of(filters.health_check(), filters.service_prefix("grpc.reflection."),
                             *(filters.full_method_name(name) for name in own_spans))
    return [server_interceptor(filter_=filters.negate(skipped))]
