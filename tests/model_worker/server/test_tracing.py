"""Spans leave a service over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT says where: a real OTLP/gRPC trace receiver in
the test process gets them, named by OTEL_SERVICE_NAME; without the variables nothing is exported."""

from __future__ import annotations

from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from foundation.tracing import tracer_provider


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []

    def Export(self, request, context):
        self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()


def test_spans_are_exported_over_otlp_grpc(monkeypatch):
    receiver, server = Receiver(), grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
        monkeypatch.setenv("OTEL_SERVICE_NAME", "worker-7")
        provider = tracer_provider("dsv4-model-worker")
        provider.get_tracer("test").start_span("chat tiny").end()
        assert provider.force_flush(10_000)
        provider.shutdown()
    finally:
        server.stop(grace=1)
    [request] = receiver.requests
    resource = request.resource_spans[0]
    names = {a.key: a.value.string_value for a in resource.resource.attributes}
    assert names["service.name"] == "worker-7"
    assert [s.name for s in resource.scope_spans[0].spans] == ["chat tiny"]


def test_nothing_is_exported_without_the_variables(monkeypatch):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    assert tracer_provider("dsv4-gateway") is None
    assert tracer_provider("dsv4-gateway", console=True) is not None
