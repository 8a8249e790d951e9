"""The jobs service over gRPC (protos/dsv4/jobs/v1/jobs.proto): tenants by API key, typed or JSONL batches, OpenAI's
batch fields, result lines streamed as requests end; health and reflection as on the model worker.

    python -m services.jobs serve --port 50061 [--api-keys keys.json]
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc

from foundation import wire
from foundation.auth import tenant_for
from foundation.chat import ChatFormatError
from foundation.chat.messages import prepare_messages
from foundation.errors import error_codes
from foundation.ids import check_id, check_optional_id
from foundation.readiness import Readiness, RefuseUntilReady
from foundation.serving import CHANNEL_OPTIONS, TlsFiles, add_health_and_reflection, set_serving
from foundation.sql import UNREACHABLE
from foundation.storable import check_message
from foundation.tracing import grpc_server_interceptors
from protos.dsv4.jobs.v1 import jobs_pb2 as pb
from protos.dsv4.jobs.v1 import jobs_pb2_grpc
from protos.dsv4.worker.v1 import worker_pb2
from services.jobs.job_store import BatchNotFound
from services.jobs.spec import MAX_CUSTOM_ID, BatchLimits, BatchTooLarge, InvalidLine, JobRequest, collect
from services.jobs.tables import BATCH_DONE, Batch
from services.jobs.use_cases import Jobs

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Jobs"].full_name
_MODES = {worker_pb2.REASONING_MODE_UNSPECIFIED: "think-max", worker_pb2.NON_THINK: "non-think",
          worker_pb2.THINK_HIGH: "think-high", worker_pb2.THINK_MAX: "think-max"}
_SCALARS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "frequency_penalty", "presence_penalty",
            "seed", "max_tokens", "top_logprobs", "logprobs")
# Every request is checked storable first (a NUL, a NaN: INVALID_ARGUMENT), since what it says is kept in SQL.
rpc = error_codes([(BatchNotFound, grpc.StatusCode.NOT_FOUND), (BatchTooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),
                   *((error, grpc.StatusCode.UNAVAILABLE) for error in UNREACHABLE)], check=check_message)


def job_request(message: pb.JobRequest, line: int, limits: BatchLimits = BatchLimits()) -> JobRequest:
    """A typed request as the JSONL path would store it; raises InvalidLine. Its messages, tools and schema are
    held to the model worker's own bounds (model_worker/server/wire.py), its size to the batch's."""
    limits.check_request(message.ByteSize(), line)
    if not message.custom_id or len(message.custom_id) > MAX_CUSTOM_ID:
        raise InvalidLine(line, f"custom_id: 1 to {MAX_CUSTOM_ID} characters")
    if message.mode not in _MODES:
        raise InvalidLine(line, f"mode: unknown reasoning mode {message.mode}")
    try:
        messages = wire.messages(message.messages)
        prepare_messages(messages)
        tools = wire.tools(message.tools)
        response_format = wire.json_schema(message.response_format.json_schema, "response_format.json_schema")
        check_optional_id(message.session_id, "session_id")
    except (ValueError, ChatFormatError) as exc:
        raise InvalidLine(line, str(exc)) from None
    if not messages:
        raise InvalidLine(line, "messages: at least one")
    s = message.sampling
    sampling: dict[str, Any] = {name: getattr(s, name) for name in _SCALARS if s.HasField(name)}
    sampling.update({k: v for k, v in (("stop", list(s.stop)), ("stop_token_ids", list(s.stop_token_ids)),
                                       ("logit_bias", dict(s.logit_bias))) if v})
    choice = wire.tool_choice(message.tool_choice) if message.HasField("tool_choice") else None
    return JobRequest(message.custom_id, messages, _MODES[message.mode], tools, choice, response_format, sampling,
                      message.session_id or None)


def batch_message(batch: Batch, counts: dict[str, int]) -> pb.Batch:
    def stamp(value) -> int:
        return int(value.timestamp()) if value is not None else 0

    return pb.Batch(
        id=batch.id, status=batch.status,
        request_counts=pb.RequestCounts(total=batch.total, completed=batch.completed, failed=batch.failed,
                                        **{k: counts.get(k, 0) for k in ("cancelled", "expired", "queued", "running")}),
        errors=[pb.InvalidLine(line=e["line"], message=e["message"]) for e in batch.invalid_lines],
        metadata=batch.metadata_ or {},
        **{f"{name}_at": stamp(getattr(batch, f"{name}_at")) for name in (
            "created", "in_progress", "finalizing", "completed", "failed", "expired", "cancelling", "cancelled",
            "expires")})


class JobsService(jobs_pb2_grpc.JobsServicer):
    def __init__(self, jobs: Jobs, api_keys: dict[str, str] | None = None, poll_s: float = 0.5) -> None:
        self.jobs, self.api_keys, self.poll_s = jobs, dict(api_keys or {}), poll_s

    def _tenant(self, context) -> str:
        return tenant_for(dict(context.invocation_metadata()), self.api_keys)

    def _batch(self, tenant: str, batch_id: str) -> pb.Batch:
        return batch_message(self._owned(tenant, batch_id), self.jobs.store.counts(batch_id))

    def _owned(self, tenant: str, batch_id: str) -> Batch:
        """The tenant's batch (BatchNotFound for another's); a malformed ID is INVALID_ARGUMENT."""
        return self.jobs.store.get(tenant, check_id(batch_id, "batch_id"))

    @rpc
    def CreateBatch(self, request, context) -> pb.Batch:
        tenant, limits = self._tenant(context), self.jobs.limits
        jsonl = request.WhichOneof("input") == "jsonl"
        # The whole request counts, its metadata and webhook URL too; a JSONL batch's lines are counted as it is read.
        limits.check_batch(0 if jsonl else len(request.requests.requests), request.ByteSize())
        options = dict(completion_window_s=request.completion_window_seconds or None,
                       metadata=dict(request.metadata), webhook_url=request.webhook_url or None,
                       interactive=request.interactive)
        if jsonl:
            view = self.jobs.submit_jsonl(tenant, request.jsonl, **options)
        else:
            typed = request.requests.requests
            parse = functools.partial(job_request, limits=limits)
            valid, invalid = collect((line, parse, message) for line, message in enumerate(typed, start=1))
            view = self.jobs.submit(tenant, valid, invalid, **options)
        return self._batch(tenant, view["id"])

    @rpc
    def GetBatch(self, request, context) -> pb.Batch:
        return self._batch(self._tenant(context), request.batch_id)

    @rpc
    def ListBatches(self, request, context) -> pb.ListBatchesResponse:
        tenant, limit = self._tenant(context), request.limit or 20
        if not 0 < limit <= 100:
            raise ValueError("limit: between 1 and 100")
        batches = self.jobs.store.list(tenant, limit + 1, check_optional_id(request.after, "after") or None)
        return pb.ListBatchesResponse(batches=[batch_message(b, self.jobs.store.counts(b.id)) for b in batches[:limit]],
                                      has_more=len(batches) > limit)

    @rpc
    def CancelBatch(self, request, context) -> pb.Batch:
        tenant = self._tenant(context)
        self.jobs.store.cancel(tenant, check_id(request.batch_id, "batch_id"))
        return self._batch(tenant, request.batch_id)

    @rpc
    def GetProgress(self, request, context) -> pb.Progress:
        self._owned(self._tenant(context), request.batch_id)
        return pb.Progress(requests=[pb.RequestProgress(custom_id=p["custom_id"], status=p["status"], phase=p["phase"],
                                                        tokens=p["tokens"], attempts=p["attempts"])
                                     for p in self.jobs.store.progress(request.batch_id)])

    @rpc
    def StreamResults(self, request, context) -> Iterator[pb.ResultLine]:
        store, tenant = self.jobs.store, self._tenant(context)
        self._owned(tenant, request.batch_id)
        cursor = None
        while context.is_active():
            ended = store.get(tenant, request.batch_id).status in BATCH_DONE  # read before the results it covers
            rows = store.ended_since(request.batch_id, cursor)
            for row_request, result in rows:
                cursor = (result.created_at, result.request_id)
                yield self._line(row_request.custom_id, result)
            if rows:
                continue
            if ended or not request.follow:
                return
            time.sleep(self.poll_s)

    def _line(self, custom_id: str, result) -> pb.ResultLine:
        response = self.jobs.response(result)
        usage = (response or {}).get("usage") or {}
        error = result.error or {}
        return pb.ResultLine(
            custom_id=custom_id, status=result.status,
            response_json=json.dumps(response, ensure_ascii=False) if response is not None else "",
            error_code=error.get("code", ""), error_message=error.get("message", ""),
            usage=worker_pb2.Usage(prompt_tokens=usage.get("prompt_tokens", 0),
                                   completion_tokens=usage.get("completion_tokens", 0),
                                   reused_tokens=(usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0),
                                   reasoning_tokens=(usage.get("completion_tokens_details") or {})
                                   .get("reasoning_tokens", 0)))


def build_server(jobs: Jobs, host: str, port: int, api_keys: dict[str, str] | None = None, threads: int = 16, *,
                 tls: TlsFiles | None = None, readiness: Readiness | None = None) -> tuple[grpc.Server, int]:
    """The service on `host:port` (TLS with `tls`). With `readiness`, its health follows it (NOT_SERVING until the
    database and the broker answer) and calls are refused UNAVAILABLE until then; without, it serves at once."""
    gate = [RefuseUntilReady(readiness)] if readiness is not None else []
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads), options=CHANNEL_OPTIONS,  # large JSONL
                         interceptors=[*grpc_server_interceptors(), *gate])
    jobs_pb2_grpc.add_JobsServicer_to_server(JobsService(jobs, api_keys), server)
    health_servicer = add_health_and_reflection(server, SERVICE_NAME, serving=readiness is None or readiness.ready)
    if readiness is not None:
        readiness.watch(lambda ready: set_serving(health_servicer, SERVICE_NAME, ready))
    address = f"{host}:{port}"
    return server, server.add_secure_port(address, tls.credentials()) if tls else server.add_insecure_port(address)

