"""`JobsClient`'s asyncio twin (grpc.aio): the same methods, awaited; result lines with `async for`. Create it inside
the event loop that uses it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc

from foundation.clients.jobs import convert
from foundation.clients.jobs.sync_client import client_credentials, create_request
from foundation.clients.jobs.types import Batch, BatchPage, JobRequest, RequestProgress, ResultLine
from foundation.clients.worker.base import AsyncRpcClient
from protos.dsv4.jobs.v1 import jobs_pb2 as pb
from protos.dsv4.jobs.v1 import jobs_pb2_grpc


class AsyncJobsClient(AsyncRpcClient):
    def __init__(self, target: str, *, api_key: str | None = None, timeout: float | None = 60.0,
                 credentials: grpc.ChannelCredentials | None = None, tls_ca: str | None = None,
                 tls_cert: str | None = None, tls_key: str | None = None, **options: Any) -> None:
        super().__init__(target, jobs_pb2_grpc.JobsStub, api_key=api_key, timeout=timeout,
                         credentials=client_credentials(credentials, tls_ca, tls_cert, tls_key), **options)

    async def submit(self, requests: Sequence[JobRequest], *, interactive: bool = False,
                     completion_window_s: int = 0, metadata: dict[str, str] | None = None,
                     webhook_url: str = "") -> Batch:
        request = create_request(requests, completion_window_s=completion_window_s, metadata=metadata,
                                 webhook_url=webhook_url, interactive=interactive)
        return convert.batch_from_proto(await self._unary("CreateBatch", request, None, retry=False))

    async def submit_jsonl(self, jsonl: str, *, completion_window_s: int = 0,
                           metadata: dict[str, str] | None = None, webhook_url: str = "") -> Batch:
        request = create_request(jsonl=jsonl, completion_window_s=completion_window_s, metadata=metadata,
                                 webhook_url=webhook_url)
        return convert.batch_from_proto(await self._unary("CreateBatch", request, None, retry=False))

    async def list(self, limit: int = 20, after: str = "") -> BatchPage:
        response = await self._unary("ListBatches", pb.ListBatchesRequest(limit=limit, after=after), None)
        return convert.batch_page_from_proto(response)

    async def get(self, batch_id: str) -> Batch:
        return convert.batch_from_proto(await self._unary("GetBatch", pb.GetBatchRequest(batch_id=batch_id), None))

    async def progress(self, batch_id: str) -> list[RequestProgress]:
        response = await self._unary("GetProgress", pb.GetProgressRequest(batch_id=batch_id), None)
        return convert.progress_from_proto(response)

    async def cancel(self, batch_id: str) -> Batch:
        response = await self._unary("CancelBatch", pb.CancelBatchRequest(batch_id=batch_id), None)
        return convert.batch_from_proto(response)

    async def results(self, batch_id: str, *, follow: bool = False,
                      timeout: float | None = None) -> AsyncIterator[ResultLine]:
        request = pb.StreamResultsRequest(batch_id=batch_id, follow=follow)
        async for line in self._stream("StreamResults", request, timeout):
            yield convert.result_line_from_proto(line)
