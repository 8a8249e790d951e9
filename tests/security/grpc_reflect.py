"""A gRPC server seen through its reflection service, and any of its methods called by descriptor: what the
reflection-driven fuzzer (tests/security/test_fuzz_grpc.py) needs besides its requests (fuzzing.py)."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import descriptor_pool, message_factory, text_format
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from hypothesis import strategies as st

# A client's mistake must never surface as one of these.
FAILURES = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
PLATFORM_PACKAGE = "dsv4."  # health and reflection are grpc's own; the platform's services are fuzzed
SERVING = health_pb2.HealthCheckResponse.SERVING


def reflect(channel: grpc.Channel) -> dict[str, ServiceDescriptor]:
    """The platform services a server lists through reflection, with every type they use, by full name."""
    database = ProtoReflectionDescriptorDatabase(channel)
    pool = descriptor_pool.DescriptorPool(database)
    names = [name for name in database.get_services() if name.startswith(PLATFORM_PACKAGE)]
    return {name: pool.FindServiceByName(name) for name in names}


@dataclass
class Outcome:
    code: grpc.StatusCode
    details: str
    responses: list


def call(channel: grpc.Channel, method: MethodDescriptor, request, metadata: list[tuple[str, str]],
         timeout: float) -> Outcome:
    """The method called with `request`; a stream is consumed until it ends or the deadline cuts it."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    reply = message_factory.GetMessageClass(method.output_type)
    kinds = {(False, False): channel.unary_unary, (False, True): channel.unary_stream,
             (True, False): channel.stream_unary, (True, True): channel.stream_stream}
    stub = kinds[(method.client_streaming, method.server_streaming)](
        path, request_serializer=lambda m: m.SerializeToString(), response_deserializer=reply.FromString)
    sent = iter(request) if method.client_streaming else request
    responses: list = []
    try:
        if method.server_streaming:
            for response in stub(sent, timeout=timeout, metadata=metadata):
                responses.append(response)
        else:
            responses.append(stub(sent, timeout=timeout, metadata=metadata))
    except grpc.RpcError as error:
        return Outcome(error.code(), error.details() or "", responses)
    return Outcome(grpc.StatusCode.OK, "", responses)


def describe(request) -> str:
    """A request as text for a failure message (huge strings cut)."""
    parts = request if isinstance(request, list) else [request]
    text = " | ".join(text_format.MessageToString(p, as_one_line=True) for p in parts)
    return text if len(text) < 2000 else text[:1000] + f" ...[{len(text)} chars]... " + text[-500:]


def serving(channel: grpc.Channel) -> int:
    """The server's overall health status (grpc.health.v1)."""
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status


def metadata_for(keys: dict[str, str], tenant_header: str) -> st.SearchStrategy[list[tuple[str, str]]]:
    """Call metadata with one of the tenants' keys, sometimes naming a tenant (its own, another, a hostile one)."""
    def with_tenant(key: str) -> st.SearchStrategy:
        others = [t for t in keys.values() if t != keys[key]]
        named = st.sampled_from([None] * 9 + [keys[key], *others, "../x"])
        return named.map(lambda t: [("authorization", f"Bearer {key}")] + ([(tenant_header, t)] if t else []))

    return st.sampled_from(sorted(keys)).flatmap(with_tenant)
