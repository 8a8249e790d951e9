"""The jobs service over gRPC (protos/dsv4/jobs/v1/jobs.proto): tenants by API key, typed or JSONL batches, OpenAI's
batch fields, result lines streamed as requests end; health and reflection as on the model worker.

    python -m services.jobs serve --port 50061 [--api-keys keys.json]
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc

from model_worker.chat import ChatFormatError
from model_worker.chat.messages import prepare_messages
from model_worker.server import convert
from model_worker.server.auth import tenant_for
from model_worker.server.common import CHANNEL_OPTIONS, add_health_and_reflection
from model_worker.server.errors import error_codes
from model_worker.server.tracing import grpc_server_interceptors
from protos.dsv4.jobs.v1 import jobs_pb2 as pb
from protos.dsv4.jobs.v1 import jobs_pb2_grpc
from protos.dsv4.worker.v1 import worker_pb2
from services.jobs.api import Jobs
from services.jobs.models import BATCH_DONE, Batch
from services.jobs.service import BatchNotFound
from services.jobs.spec import MAX_CUSTOM_ID, InvalidLine, JobRequest, collect

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Jobs"].full_name
_MODES = {worker_pb2.REASONING_MODE_UNSPECIFIED: "think-max", worker_pb2.NON_THINK: "non-think",
          worker_pb2.THINK_HIGH: "think-high", worker_pb2.THINK_MAX: "think-max"}
_SCALARS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "frequency_penalty", "presence_penalty",
            "seed", "max_tokens", "top_logprobs", "logprobs")
rpc = error_codes([(BatchNotFound, grpc.StatusCode.NOT_FOUND)])


def job_request(message: pb.JobRequest, line: int) -> JobRequest:
    """A typed request as the JSONL path would store it; raises InvalidLine."""
    if not message.custom_id or len(message.custom_id) > MAX_CUSTOM_ID:
        raise InvalidLine(line, f"custom_id: 1 to {MAX_CUSTOM_ID} characters")
    if message.mode not in _MODES:
        raise InvalidLine(line, f"mode: unknown reasoning mode {message.mode}")
    try:
        messages = convert.messages(message.messages)
        prepare_messages(messages)
        tools = convert.tools(message.tools)
        response_format = convert.json_schema(message.response_format.json_schema, "response_format.json_schema")
    except (ValueError, ChatFormatError) as exc:
        raise InvalidLine(line, str(exc)) from None
    if not messages:
        raise InvalidLine(line, "messages: at least one")
    s = message.sampling
    sampling: dict[str, Any] = {name: getattr(s, name) for name in _SCALARS if s.HasField(name)}
    sampling.update({k: v for k, v in (("stop", list(s.stop)), ("stop_token_ids", list(s.stop_token_ids)),
                                       ("logit_bias", dict(s.logit_bias))) if v})
    choice = convert.tool_choice(message.tool_choice) if message.HasField("tool_choice") else None
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
        return batch_message(self.jobs.store.get(tenant, batch_id), self.jobs.store.counts(batch_id))

    @rpc
    def CreateBatch(self, request, context) -> pb.Batch:
        tenant = self._tenant(context)
        options = dict(completion_window_s=request.completion_window_seconds or None,
                       metadata=dict(request.metadata), webhook_url=request.webhook_url or None,
                       interactive=request.interactive)
        if request.WhichOneof("input") == "jsonl":
            view = self.jobs.submit_jsonl(tenant, request.jsonl, **options)
        else:
            valid, invalid = collect((line, job_request, message)
                                     for line, message in enumerate(request.requests.requests, start=1))
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
        batches = self.jobs.store.list(tenant, limit + 1, request.after or None)
        return pb.ListBatchesResponse(batches=[batch_message(b, self.jobs.store.counts(b.id)) for b in batches[:limit]],
                                      has_more=len(batches) > limit)

    @rpc
    def CancelBatch(self, request, context) -> pb.Batch:
        tenant = self._tenant(context)
        self.jobs.store.cancel(tenant, request.batch_id)
        return self._batch(tenant, request.batch_id)

    @rpc
    def GetProgress(self, request, context) -> pb.Progress:
        self.jobs.store.get(self._tenant(context), request.batch_id)
        return pb.Progress(requests=[pb.RequestProgress(custom_id=p["custom_id"], status=p["status"], phase=p["phase"],
                                                        tokens=p["tokens"], attempts=p["attempts"])
                                     for p in self.jobs.store.progress(request.batch_id)])

    @rpc
    def StreamResults(self, request, context) -> Iterator[pb.ResultLine]:
        store, tenant = self.jobs.store, self._tenant(context)
        store.get(tenant, request.batch_id)
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


def build_server(jobs: Jobs, host: str, port: int, api_keys: dict[str, str] | None = None, threads: int = 16
                 ) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads), options=CHANNEL_OPTIONS,  # large JSONL
                         interceptors=grpc_server_interceptors())
    jobs_pb2_grpc.add_JobsServicer_to_server(JobsService(jobs, api_keys), server)
    add_health_and_reflection(server, SERVICE_NAME, serving=True)
    return server, server.add_insecure_port(f"{host}:{port}")

