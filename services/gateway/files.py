"""`/v1/files`: OpenAI's Files API for batch work. Uploaded batch-input JSONL and the batch output and error files the
gateway writes are bytes under `settings.files_dir` (a directory per tenant) and `StoredFile` rows; every route sees
only the caller's files. Routes are plain functions: FastAPI runs them on its thread pool, so the blocking database and
disk calls do not stall the event loop."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import FileResponse
from sqlalchemy import and_, or_, select

from foundation.ids import check_id
from foundation.sql import utcnow
from foundation.storable import check_text
from services.gateway.bounds import BoundedRoute
from services.gateway.deps import GatewayDep, TenantDep
from services.gateway.errors import ApiError
from services.gateway.state import Gateway
from services.gateway.store import StoredFile

router = APIRouter(route_class=BoundedRoute)

BATCH, BATCH_OUTPUT = "batch", "batch_output"
UPLOAD_PURPOSES = (BATCH,)
_CHUNK = 1 << 20


def file_object(row: StoredFile) -> dict[str, Any]:
    return {"id": row.id, "object": "file", "bytes": row.bytes, "created_at": int(row.created_at.timestamp()),
            "filename": row.filename, "purpose": row.purpose, "status": "processed", "expires_at": None,
            "status_details": None}


def tenant_dir(tenant: str) -> str:
    """A directory name safe for any tenant string (tenants come from the API keys file and may hold '/' or '..')."""
    return hashlib.sha256(tenant.encode()).hexdigest()[:24]


def disk_path(gw: Gateway, row: StoredFile) -> Path:
    return Path(gw.settings.files_dir) / row.path


def get_file(gw: Gateway, tenant: str, file_id: str, param: str | None = None) -> StoredFile:
    """The tenant's file; another tenant's is as absent as one that never existed."""
    check_id(file_id, param or "file_id")
    with gw.db() as s:
        row = s.get(StoredFile, file_id)
    if row is None or row.tenant != tenant:
        raise ApiError(404, f"no file {file_id}", param=param, code="not_found")
    return row


class NewFile:
    """A file being written to the tenant's directory. Bytes go to a unique temporary name and are renamed into
    place by `keep`, so a reader never sees a partial file and two writers of the same (derived) id do not mix; a
    file not kept is removed when the `with` block ends. Past `limit` bytes, writing fails with 413."""

    def __init__(self, gw: Gateway, tenant: str, file_id: str, limit: int | None = None) -> None:
        self.gw, self.tenant, self.file_id, self.limit, self.size = gw, tenant, file_id, limit, 0
        self.relative = f"{tenant_dir(tenant)}/{file_id}"
        self.final = Path(gw.settings.files_dir) / self.relative
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.partial = self.final.with_name(f"{file_id}.{uuid.uuid4().hex}.part")
        self.out = open(self.partial, "wb")

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.limit is not None and self.size > self.limit:
            raise ApiError(413, f"the file is over {self.limit} bytes, this gateway's limit", param="file",
                           code="file_too_large")
        self.out.write(data)

    def keep(self, filename: str, purpose: str, batch_id: str | None = None) -> StoredFile:
        """The row to record (the caller adds it); the bytes are in place from now on."""
        self.out.close()
        os.replace(self.partial, self.final)
        return StoredFile(id=self.file_id, tenant=self.tenant, purpose=purpose, filename=filename[:512],
                          bytes=self.size, path=self.relative, batch_id=batch_id, created_at=utcnow())

    def __enter__(self) -> NewFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.out.close()
        self.partial.unlink(missing_ok=True)


@router.post("/files")
def upload_file(gw: GatewayDep, tenant: TenantDep, file: Annotated[UploadFile, File()],
                purpose: Annotated[str, Form()]) -> dict[str, Any]:
    if purpose not in UPLOAD_PURPOSES:
        raise ApiError(400, f"purpose {purpose!r} is not supported here; supported: {', '.join(UPLOAD_PURPOSES)}",
                       param="purpose", code="invalid_value")
    filename = check_text(file.filename or "upload.jsonl", "file's filename")  # a row's text, as a body's is checked
    with NewFile(gw, tenant, f"file-{uuid.uuid4().hex}", limit=gw.settings.max_file_bytes) as new:
        while chunk := file.file.read(_CHUNK):
            new.write(chunk)
        row = new.keep(filename, purpose)
    with gw.db.begin() as s:
        s.add(row)
    return file_object(row)


@router.get("/files")
def list_files(gw: GatewayDep, tenant: TenantDep, purpose: str | None = None, after: str | None = None,
               limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
               order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc") -> dict[str, Any]:
    """Newest first by default; `after` is the last file ID of the previous page."""
    query = select(StoredFile).where(StoredFile.tenant == tenant)
    if purpose:
        query = query.where(StoredFile.purpose == purpose)
    newest_first = order == "desc"
    if after:
        anchor = get_file(gw, tenant, after, param="after")
        beyond = (StoredFile.created_at < anchor.created_at) if newest_first else (
            StoredFile.created_at > anchor.created_at)
        past_id = (StoredFile.id < anchor.id) if newest_first else (StoredFile.id > anchor.id)
        query = query.where(or_(beyond, and_(StoredFile.created_at == anchor.created_at, past_id)))
    keys = (StoredFile.created_at.desc(), StoredFile.id.desc()) if newest_first else (
        StoredFile.created_at, StoredFile.id)
    with gw.db() as s:
        rows = list(s.scalars(query.order_by(*keys).limit(limit + 1)))
    data = [file_object(row) for row in rows[:limit]]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": len(rows) > limit}


@router.get("/files/{file_id}")
def retrieve_file(file_id: str, gw: GatewayDep, tenant: TenantDep) -> dict[str, Any]:
    return file_object(get_file(gw, tenant, file_id))


@router.get("/files/{file_id}/content")
def file_content(file_id: str, gw: GatewayDep, tenant: TenantDep) -> FileResponse:
    row = get_file(gw, tenant, file_id)
    return FileResponse(disk_path(gw, row), media_type="application/octet-stream", filename=row.filename)


@router.delete("/files/{file_id}")
def delete_file(file_id: str, gw: GatewayDep, tenant: TenantDep) -> dict[str, Any]:
    row = get_file(gw, tenant, file_id)
    with gw.db.begin() as s:
        s.delete(s.merge(row))
    disk_path(gw, row).unlink(missing_ok=True)  # after the row: a failed delete leaves no row without bytes
    return {"id": file_id, "object": "file", "deleted": True}

