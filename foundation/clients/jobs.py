"""A typed client of the jobs service's gRPC API (protos/dsv4/jobs/v1/jobs.proto), for the agent runtime's Think Max
turns and any caller that submits batches from code. Channel, deadlines and retries are the platform's
(foundation.clients.worker.base.SyncRpcClient); TLS as the model worker's clients do it
(foundation.clients.worker.policy)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import grpc
from pydantic import Field
from pydantic_settings import BaseSettings

from foundation.clients.worker.base import SyncRpcClient
from foundation.clients.worker.policy import tls_credentials
from protos.dsv4.jobs.v1 import jobs_pb2 as pb
from protos.dsv4.jobs.v1 import jobs_pb2_grpc


class JobsTlsSettings(BaseSettings):
    """What a caller of the jobs service configures to reach it over TLS (under the caller's own prefix)."""

    jobs_tls_ca: str | None = Field(None, description="PEM CA bundle that verifies the jobs service: call it over "
                                    "TLS (a jobs_tls_cert alone: TLS verified by the system's roots)")
    jobs_tls_cert: str | None = Field(None, description="PEM certificate chain this service shows a jobs service "
                                      "that requires mutual TLS (with jobs_tls_key)")
    jobs_tls_key: str | None = Field(None, description="PEM private key of jobs_tls_cert")


class JobsClient(SyncRpcClient):
    def __init__(self, target: str, *, api_key: str | None = None, timeout: float | None = 60.0,
                 credentials: grpc.ChannelCredentials | None = None, tls_ca: str | None = None,
                 tls_cert: str | None = None, tls_key: str | None = None, **options: Any) -> None:
        """Over TLS with `credentials`, or when a PEM file is named (a caller's settings): `tls_ca` verifies the
        service (none: the system's roots), `tls_cert` and `tls_key` are the caller's identity for mutual TLS."""
        if credentials is None and (tls_ca or tls_cert or tls_key):
            credentials = tls_credentials(tls_ca, tls_cert, tls_key)
        super().__init__(target, jobs_pb2_grpc.JobsStub, api_key=api_key, timeout=timeout, credentials=credentials,
                         **options)

    def submit(self, requests: Sequence[pb.JobRequest], *, interactive: bool = False,
               metadata: dict[str, str] | None = None) -> pb.Batch:
        """Not retried: a submit that reached the service before the connection failed would make a second batch."""
        request = pb.CreateBatchRequest(requests=pb.JobRequests(requests=list(requests)), interactive=interactive,
                                        metadata=metadata or {})
        return self._unary("CreateBatch", request, None, retry=False)

    def submit_jsonl(self, jsonl: str, *, completion_window_s: int = 0,
                     metadata: dict[str, str] | None = None) -> pb.Batch:
        """OpenAI batch-input lines, validated per line by the service (invalid ones come back in the batch's errors).
        Not retried, as `submit`."""
        request = pb.CreateBatchRequest(jsonl=jsonl, completion_window_seconds=completion_window_s,
                                        metadata=metadata or {})
        return self._unary("CreateBatch", request, None, retry=False)

    def list(self, limit: int = 20, after: str = "") -> pb.ListBatchesResponse:
        return self._unary("ListBatches", pb.ListBatchesRequest(limit=limit, after=after), None)

    def get(self, batch_id: str) -> pb.Batch:
        return self._unary("GetBatch", pb.GetBatchRequest(batch_id=batch_id), None)

    def progress(self, batch_id: str) -> pb.Progress:
        return self._unary("GetProgress", pb.GetProgressRequest(batch_id=batch_id), None)

    def cancel(self, batch_id: str) -> pb.Batch:
        return self._unary("CancelBatch", pb.CancelBatchRequest(batch_id=batch_id), None)

    def results(self, batch_id: str, *, follow: bool = False, timeout: float | None = None) -> Iterator[pb.ResultLine]:
        """Result lines as requests end; with `follow`, until the batch does."""
        return self._stream("StreamResults", pb.StreamResultsRequest(batch_id=batch_id, follow=follow), timeout)
