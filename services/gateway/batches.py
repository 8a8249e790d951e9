"""`/v1/batches` (and, mounted with it, `/v1/files`): OpenAI's Batch API over the jobs service. A batch's input is one
of the tenant's uploaded files, whose JSONL goes to the jobs service as is (it validates each line and reports the
invalid ones in the batch's errors with their line numbers). Once a batch has ended, its result lines become an output
file and, when some request did not complete, an error file: written once, on the first read of the ended batch.

Tenants: the gateway calls the jobs service with one identity, so the jobs service cannot tell the gateway's tenants
apart. Each batch carries its tenant and input file in reserved metadata keys, which callers may not set and never
see; every route checks the tenant key, and another tenant's batch is as absent as one that never existed. Routes are
plain functions: FastAPI runs them on its thread pool, where the blocking gRPC, database and disk calls belong."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from foundation.clients.jobs import Batch, BatchPage, JobsClient, ResultLine
from foundation.clients.worker.errors import NotFound, ResourceExhausted
from foundation.ids import check_id
from services.gateway import files
from services.gateway.bounds import BoundedRoute
from services.gateway.deps import GatewayDep, TenantDep
from services.gateway.errors import ApiError
from services.gateway.state import Gateway
from services.gateway.store import StoredFile

router = APIRouter(route_class=BoundedRoute)
router.include_router(files.router)  # files exist here for batches; one router keeps the two mounted together

ENDPOINT = "/v1/chat/completions"
COMPLETION_WINDOWS = {"24h": 24 * 3600}
RESERVED_PREFIX = "gateway."
TENANT_KEY, INPUT_FILE_KEY = f"{RESERVED_PREFIX}tenant", f"{RESERVED_PREFIX}input_file_id"
WITH_RESULTS = ("completed", "expired", "cancelled")  # ended with result lines (a failed batch had no valid line)
_TIMES = ("created", "in_progress", "finalizing", "completed", "failed", "expired", "cancelling", "cancelled",
          "expires")
_JOBS_PAGE = 100  # the jobs service's largest page
_RESULTS_TIMEOUT_S = 600.0  # reading a whole large batch's results can outlast the client's default deadline


class CreateBatch(BaseModel):
    model_config = ConfigDict(extra="ignore")

    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None = Field(None, max_length=16)

    @field_validator("metadata")
    @classmethod
    def _openai_limits(cls, metadata: dict[str, str] | None) -> dict[str, str] | None:
        for key, value in (metadata or {}).items():
            if len(key) > 64 or len(value) > 512:
                raise ValueError("keys of at most 64 characters, values of at most 512")
            if key.startswith(RESERVED_PREFIX):
                raise ValueError(f"keys starting {RESERVED_PREFIX!r} are reserved")
        return metadata


def _submit_jsonl(jobs: JobsClient, jsonl: str, window_s: int, metadata: dict[str, str]) -> Batch:
    """The batch as the jobs service created it. Its RESOURCE_EXHAUSTED here is a batch over its bounds (lines or
    bytes; it limits no rate), which waiting does not cure: 413."""
    try:
        return jobs.submit_jsonl(jsonl, completion_window_s=window_s, metadata=metadata)
    except ResourceExhausted as error:
        raise ApiError(413, error.details, param="input_file_id", code="batch_too_large") from None


def _list_page(jobs: JobsClient, after: str) -> BatchPage:
    return jobs.list(_JOBS_PAGE, after)


def owned_batch(jobs: JobsClient, tenant: str, batch_id: str) -> Batch:
    check_id(batch_id, "batch_id")
    try:
        batch = jobs.get(batch_id)
    except NotFound:
        batch = None
    if batch is None or batch.metadata.get(TENANT_KEY) != tenant:
        raise ApiError(404, f"no batch {batch_id}", code="not_found")
    return batch


def batch_object(batch: Batch, output_file_id: str | None, error_file_id: str | None) -> dict[str, Any]:
    """OpenAI's Batch object, as services/jobs/batch_object.py renders it from its own rows (times of 0 are "not
    yet")."""
    window_s = batch.expires_at - batch.created_at
    counts = batch.request_counts
    return {
        "id": batch.id, "object": "batch", "endpoint": ENDPOINT, "status": batch.status,
        "input_file_id": batch.metadata.get(INPUT_FILE_KEY), "output_file_id": output_file_id,
        "error_file_id": error_file_id,
        "completion_window": f"{window_s // 3600}h" if window_s % 3600 == 0 else f"{window_s}s",
        "errors": {"object": "list", "data": [{"code": "invalid_request", "line": e.line, "message": e.message,
                                               "param": None} for e in batch.errors]} if batch.errors else None,
        "request_counts": {"total": counts.total, "completed": counts.completed, "failed": counts.failed},
        "requests_by_status": {status: getattr(counts, status) for status in (
            "queued", "running", "completed", "failed", "cancelled", "expired") if getattr(counts, status)},
        "metadata": {k: v for k, v in batch.metadata.items() if not k.startswith(RESERVED_PREFIX)} or None,
        **{f"{name}_at": getattr(batch, f"{name}_at") or None for name in _TIMES},
    }


def result_line(batch_id: str, line: ResultLine) -> dict[str, Any]:
    """One line of OpenAI's batch output, as services/jobs/use_cases.py renders its own; a cancelled request's partial
    output is in its response. The line id is derived, so writing the file again gives the same bytes."""
    response = json.loads(line.response_json) if line.response_json else None
    return {"id": f"batch_req_{_digest(batch_id, line.custom_id)}", "custom_id": line.custom_id,
            "response": None if response is None else {"status_code": 200, "request_id": response.get("id"),
                                                       "body": response},
            "error": {"code": line.error_code, "message": line.error_message}
            if line.error_code or line.error_message else None}


def _digest(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:32]


def _result_file_ids(batch_id: str) -> tuple[str, str]:
    """Output and error file ids derived from the batch's, so two readers writing them at once agree on them."""
    return f"file-{_digest(batch_id, 'output')}", f"file-{_digest(batch_id, 'error')}"


def result_files(gw: Gateway, tenant: str, batch: Batch, *, write: bool) -> tuple[str | None, str | None]:
    """The batch's output and error file ids, those that exist; with `write`, an ended batch's are written first if
    its output file is not there (never written, or deleted since)."""
    output_id, error_id = _result_file_ids(batch.id)
    with gw.db() as s:
        present = set(s.scalars(select(StoredFile.id).where(StoredFile.id.in_((output_id, error_id)))))
    if write and output_id not in present and batch.status in WITH_RESULTS:
        present = _write_result_files(gw, tenant, batch.id)
    return (output_id if output_id in present else None, error_id if error_id in present else None)


def _write_result_files(gw: Gateway, tenant: str, batch_id: str) -> set[str]:
    output_id, error_id = _result_file_ids(batch_id)
    with files.NewFile(gw, tenant, output_id) as output, files.NewFile(gw, tenant, error_id) as failed:
        for line in gw.need_jobs().results(batch_id, timeout=_RESULTS_TIMEOUT_S):
            target = output if line.status == "completed" else failed
            target.write(json.dumps(result_line(batch_id, line), ensure_ascii=False).encode() + b"\n")
        rows = [output.keep(f"{batch_id}_output.jsonl", files.BATCH_OUTPUT, batch_id)]
        if failed.size:
            rows.append(failed.keep(f"{batch_id}_error.jsonl", files.BATCH_OUTPUT, batch_id))
    for row in rows:  # one at a time: a row a concurrent reader added first must not undo the other
        try:
            with gw.db.begin() as s:
                s.add(row)
        except IntegrityError:
            pass  # that reader wrote the same bytes under the same id
    return {row.id for row in rows}


@router.post("/batches")
def create_batch(body: CreateBatch, gw: GatewayDep, tenant: TenantDep) -> dict[str, Any]:
    if body.endpoint != ENDPOINT:
        raise ApiError(400, f"endpoint {body.endpoint!r} is not supported; supported: {ENDPOINT}",
                       param="endpoint", code="invalid_value")
    if body.completion_window not in COMPLETION_WINDOWS:
        raise ApiError(400, f"completion_window {body.completion_window!r} is not supported; supported: "
                            f"{', '.join(COMPLETION_WINDOWS)}", param="completion_window", code="invalid_value")
    jobs = gw.need_jobs()
    source = files.get_file(gw, tenant, body.input_file_id, param="input_file_id")
    if source.purpose != files.BATCH:
        raise ApiError(400, f"file {source.id} has purpose {source.purpose!r}; a batch's input file needs purpose "
                            f"{files.BATCH!r}", param="input_file_id", code="invalid_value")
    try:
        jsonl = files.disk_path(gw, source).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, f"file {source.id} is not UTF-8 text", param="input_file_id",
                       code="invalid_value") from None
    metadata = {**(body.metadata or {}), TENANT_KEY: tenant, INPUT_FILE_KEY: source.id}
    batch = _submit_jsonl(jobs, jsonl, COMPLETION_WINDOWS[body.completion_window], metadata)
    return batch_object(batch, None, None)


@router.get("/batches/{batch_id}")
def retrieve_batch(batch_id: str, gw: GatewayDep, tenant: TenantDep) -> dict[str, Any]:
    batch = owned_batch(gw.need_jobs(), tenant, batch_id)
    return batch_object(batch, *result_files(gw, tenant, batch, write=True))


@router.post("/batches/{batch_id}/cancel")
def cancel_batch(batch_id: str, gw: GatewayDep, tenant: TenantDep) -> dict[str, Any]:
    jobs = gw.need_jobs()
    owned_batch(jobs, tenant, batch_id)
    batch = jobs.cancel(batch_id)  # one with only queued requests ends now, cancelled
    return batch_object(batch, *result_files(gw, tenant, batch, write=True))


@router.get("/batches")
def list_batches(gw: GatewayDep, tenant: TenantDep, after: str | None = None,
                 limit: Annotated[int, Query(ge=1, le=100)] = 20) -> dict[str, Any]:
    """Newest first; `after` is the last batch ID of the previous page. Result files are listed where written
    already (reading a batch writes them). The jobs service lists every tenant's batches to the gateway, so pages
    are read until this tenant's fill one: the cost grows with the other tenants' batches in between."""
    jobs = gw.need_jobs()
    if after:
        owned_batch(jobs, tenant, after)
    mine: list[Batch] = []
    cursor = after or ""
    while len(mine) <= limit:
        page = _list_page(jobs, cursor)
        mine += [b for b in page.batches if b.metadata.get(TENANT_KEY) == tenant]
        if not page.has_more or not page.batches:
            break
        cursor = page.batches[-1].id
    data = [batch_object(b, *result_files(gw, tenant, b, write=False)) for b in mine[:limit]]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": len(mine) > limit}
