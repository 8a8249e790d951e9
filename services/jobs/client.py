"""A typed client of the jobs service's gRPC API (protos/dsv4/jobs/v1/jobs.proto), for the agent runtime's Think Max
turns and any caller that submits batches from code."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import grpc

from model_worker.client import policy
from model_worker.client.errors import from_rpc_error
from protos.dsv4.jobs.v1 import jobs_pb2 as pb
from protos.dsv4.jobs.v1 import jobs_pb2_grpc


class JobsClient:
    def __init__(self, target: str, *, api_key: str | None = None, timeout: float | None = 60.0,
                 credentials: grpc.ChannelCredentials | None = None) -> None:
        options = policy.channel_options()
        if credentials is None:
            self._channel = grpc.insecure_channel(target, options=options)
        else:
            self._channel = grpc.secure_channel(target, credentials, options=options)
        self._stub = jobs_pb2_grpc.JobsStub(self._channel)
        self._metadata = policy.auth_metadata(api_key)
        self._timeout = timeout

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> JobsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, request):
        try:
            return getattr(self._stub, method)(request, metadata=self._metadata, timeout=self._timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    def submit(self, requests: Sequence[pb.JobRequest], *, interactive: bool = False,
               metadata: dict[str, str] | None = None) -> pb.Batch:
        return self._call("CreateBatch", pb.CreateBatchRequest(requests=pb.JobRequests(requests=list(requests)),
                                                                interactive=interactive, metadata=metadata or {}))

    def get(self, batch_id: str) -> pb.Batch:
        return self._call("GetBatch", pb.GetBatchRequest(batch_id=batch_id))

    def progress(self, batch_id: str) -> pb.Progress:
        return self._call("GetProgress", pb.GetProgressRequest(batch_id=batch_id))

    def cancel(self, batch_id: str) -> pb.Batch:
        return self._call("CancelBatch", pb.CancelBatchRequest(batch_id=batch_id))

    def results(self, batch_id: str, *, follow: bool = False, timeout: float | None = None) -> Iterator[pb.ResultLine]:
        """Result lines as requests end; with `follow`, until the batch does."""
        stream = self._stub.StreamResults(pb.StreamResultsRequest(batch_id=batch_id, follow=follow),
                                          metadata=self._metadata, timeout=timeout)
        try:
            yield from stream
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        finally:
            stream.cancel()
