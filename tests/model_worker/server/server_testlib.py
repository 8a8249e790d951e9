"""What the model worker's server tests share: a real worker (gRPC on localhost, the real engine, sessions on
disk) and the request shapes they send it."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from foundation.chat import load_tokenizer
from foundation.serving import CHANNEL_OPTIONS
from model_worker.server.runtime import WorkerRuntime
from model_worker.server.serve import SERVICE_NAME, build_server
from model_worker.sessions import SessionStore, open_blobs
from protos.dsv4.worker.v1 import worker_pb2 as pb
from protos.dsv4.worker.v1 import worker_pb2_grpc


class Worker:
    """A worker on an OS-chosen port over the store at `root`."""

    def __init__(self, model, root, api_keys=None, **limits) -> None:
        store = SessionStore(open_blobs(str(root)), model.fingerprint, model.layout)
        self.runtime = WorkerRuntime(model, load_tokenizer(), store, api_keys=api_keys, token_budget=256, **limits)
        self.server, port, self.health = build_server(self.runtime, "127.0.0.1", 0, threads=8)
        self.runtime.start()
        self.server.start()
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS)
        self.stub = worker_pb2_grpc.ModelWorkerStub(self.channel)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)

    def stop(self) -> None:
        self.channel.close()
        self.server.stop(grace=5).wait()
        self.runtime.stop()


def greedy(max_tokens: int, **fields) -> pb.SamplingParams:
    return pb.SamplingParams(temperature=0.0, max_tokens=max_tokens, **fields)


def user(text: str) -> pb.Messages:
    return pb.Messages(messages=[pb.ChatMessage(role="user", content=text)])


def run(stub, request) -> tuple[list[pb.GenerateResponse], pb.Final]:
    responses = list(stub.Generate(request, timeout=120))
    assert responses[-1].WhichOneof("event") == "final"
    return responses[:-1], responses[-1].final
