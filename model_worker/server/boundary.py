"""What every ModelWorker RPC does around its own work, in one place (the `rpc` decorator): typed errors become
status codes (errors.py); every client-chosen ID in the request, or in each message of a request stream as it is
read, is checked before anything uses it (foundation.ids); and an RPC that computes (Generate, CreateSession
including copies, AppendSession, ImportSession) holds one of its tenant's slots throughout
(`WorkerRuntime.tenant_slot`), its tokens charged at the tenant's rate where they enter the engine
(`WorkerRuntime.submit`, `admit_tokens`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from google.protobuf.message import Message

from foundation.ids import check_optional_id
from model_worker.server.errors import worker_error_codes

# Fields of any worker request that carry an ID the client chose; empty ones are the server's to fill (or refused by
# the RPC that needs them).
ID_FIELDS = ("session_id", "new_session_id", "from_session", "holder", "request_id", "page_token")


def check_ids(message: Message) -> Message:
    names = message.DESCRIPTOR.fields_by_name
    for name in ID_FIELDS:
        if name in names:
            check_optional_id(getattr(message, name), name)
    return message


def _checked(request: Message | Iterable[Message]) -> Message | Iterator[Message]:
    if isinstance(request, Message):
        return check_ids(request)
    return (check_ids(message) for message in request)  # a client stream: each message as it is read


def rpc(*, compute: bool = False):
    """Decorate a WorkerService method (unary or server-streaming, over a request or a request stream)."""
    return worker_error_codes(check=_checked, scope=_tenant_slot if compute else None)


def _tenant_slot(service, context):
    return service.runtime.tenant_slot(service._tenant(context))
