"""A typed client of the jobs service's gRPC API (protos/dsv4/jobs/v1/jobs.proto), for the agent runtime's Think Max
turns and any caller that submits batches from code; its asyncio twin is `AsyncJobsClient`. It takes and returns the
dataclasses of types.py, never protobuf. Channel, deadlines and retries are the platform's
(foundation.clients.worker.base); TLS as the model worker's clients do it (foundation.clients.worker.policy)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import grpc
from pydantic import Field
from pydantic_settings import BaseSettings

from foundation.clients.jobs import convert
from foundation.clients.jobs.types import Batch, BatchPage, JobRequest, RequestProgress, ResultLine
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


def client_credentials(credentials: grpc.ChannelCredentials | None, tls_ca: str | None, tls_cert: str | None,
                       tls_key: str | None) -> grpc.ChannelCredentials | None:
    """`credentials`, else TLS when a PEM file is named (a caller's settings): `tls_ca` verifies the service (none:
    the system's roots), `tls_cert` and `tls_key` are the caller's identity for mutual TLS."""
    if credentials is None and (tls_ca or tls_cert or tls_key):
        return tls_credentials(tls_ca, tls_cert, tls_key)
    return credentials


def create_request(requests: Sequence[JobRequest] | None = None, jsonl: str | None = None, *,
                   completion_window_s: int = 0, metadata: dict[str, str] | None = None, webhook_url: str = "",
                   interactive: bool = False) -> pb.CreateBatchRequest:
    message = pb.CreateBatchRequest(completion_window_seconds=completion_window_s, metadata=metadata or {},
                                    webhook_url=webhook_url, interactive=interactive)
    if jsonl is not None:
        message.jsonl = jsonl
    else:
        message.requests.requests.extend(convert.job_request_to_proto(r) for r in requests or ())
    return message


class JobsClient(SyncRpcClient):
    def __init__(self, target: str, *, api_key: str | None = None, timeout: float | None = 60.0,
                 credentials: grpc.ChannelCredentials | None = None, tls_ca: str | None = None,
                 tls_cert: str | None = None, tls_key: str | None = None, **options: Any) -> None:
        super().__init__(target, jobs_pb2_grpc.JobsStub, api_key=api_key, timeout=timeout,
                         credentials=client_credentials(credentials, tls_ca, tls_cert, tls_key), **options)

    def submit(self, requests: Sequence[JobRequest], *, interactive: bool = False, completion_window_s: int = 0,
               metadata: dict[str, str] | None = None, webhook_url: str = "") -> Batch:
        """Not retried: a submit that reached the service before the connection failed would make a second batch.
        `webhook_url` is POSTed the batch, signed, when it ends."""
        request = create_request(requests, completion_window_s=completion_window_s, metadata=metadata,
                                 webhook_url=webhook_url, interactive=interactive)
        return convert.batch_from_proto(self._unary("CreateBatch", request, None, retry=False))

    def submit_jsonl(self, jsonl: str, *, completion_window_s: int = 0, metadata: dict[str, str] | None = None,
                     webhook_url: str = "") -> Batch:
        """OpenAI batch-input lines, validated per line by the service (invalid ones come back in the batch's errors).
        Not retried, as `submit`."""
        request = create_request(jsonl=jsonl, completion_window_s=completion_window_s, metadata=metadata,
                                 webhook_url=webhook_url)
        return convert.batch_from_proto(self._unary("CreateBatch", request, None, retry=False))

    def list(self, limit: int = 20, after: str = "") -> BatchPage:
        response = self._unary("ListBatches", pb.ListBatchesRequest(limit=limit, after=after), None)
        return convert.batch_page_from_proto(response)

    def get(self, batch_id: str) -> Batch:
        return convert.batch_from_proto(self._unary("GetBatch", pb.GetBatchRequest(batch_id=batch_id), None))

    def progress(self, batch_id: str) -> list[RequestProgress]:
        """Each request's phase and tokens so far."""
        return convert.progress_from_proto(self._unary("GetProgress", pb.GetProgressRequest(batch_id=batch_id), None))

    def cancel(self, batch_id: str) -> Batch:
        return convert.batch_from_proto(self._unary("CancelBatch", pb.CancelBatchRequest(batch_id=batch_id), None))

    def results(self, batch_id: str, *, follow: bool = False, timeout: float | None = None) -> Iterator[ResultLine]:
        """Result lines as requests end; with `follow`, until the batch does."""
        request = pb.StreamResultsRequest(batch_id=batch_id, follow=follow)
        for line in self._stream("StreamResults", request, timeout):
            yield convert.result_line_from_proto(line)
