"""The jobs service's messages (protos/dsv4/jobs/v1) to and from the clients' dataclasses."""

from __future__ import annotations

from dataclasses import fields

from foundation.clients.jobs.types import (
    Batch,
    BatchPage,
    InvalidLine,
    JobRequest,
    RequestCounts,
    RequestProgress,
    ResultLine,
)
from foundation.clients.worker import convert as worker_convert
from foundation.clients.worker import requests as worker_requests
from protos.dsv4.jobs.v1 import jobs_pb2 as pb


def job_request_to_proto(request: JobRequest) -> pb.JobRequest:
    message = pb.JobRequest(
        custom_id=request.custom_id, messages=[worker_convert.message_to_proto(m) for m in request.messages],
        tools=worker_requests.tools_to_proto(request.tools), session_id=request.session_id,
        mode=worker_convert.enum_value(worker_convert.MODES, request.mode, "mode"))
    if request.sampling is not None:
        message.sampling.CopyFrom(worker_convert.sampling_to_proto(request.sampling))
    choice = worker_requests.tool_choice_to_proto(request.tool_choice)
    if choice is not None:
        message.tool_choice.CopyFrom(choice)
    if request.response_format is not None:
        message.response_format.json_schema = worker_requests.schema_text(request.response_format)
    return message


def batch_from_proto(msg: pb.Batch) -> Batch:
    times = {f.name: getattr(msg, f.name) for f in fields(Batch) if f.name.endswith("_at")}
    counts = RequestCounts(**{f.name: getattr(msg.request_counts, f.name) for f in fields(RequestCounts)})
    return Batch(id=msg.id, status=msg.status, request_counts=counts,
                 errors=[InvalidLine(e.line, e.message) for e in msg.errors], metadata=dict(msg.metadata), **times)


def batch_page_from_proto(msg: pb.ListBatchesResponse) -> BatchPage:
    return BatchPage([batch_from_proto(b) for b in msg.batches], msg.has_more)


def result_line_from_proto(msg: pb.ResultLine) -> ResultLine:
    return ResultLine(custom_id=msg.custom_id, status=msg.status, response_json=msg.response_json,
                      error_code=msg.error_code, error_message=msg.error_message,
                      usage=worker_convert.usage_from_proto(msg.usage))


def progress_from_proto(msg: pb.Progress) -> list[RequestProgress]:
    return [RequestProgress(custom_id=r.custom_id, status=r.status, phase=r.phase, tokens=r.tokens,
                            attempts=r.attempts) for r in msg.requests]
