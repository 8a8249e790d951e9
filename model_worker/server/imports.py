"""ImportSession: an export streamed in by a client, taken as untrusted input at every step.

The stream is written to a temporary file until it passes what the tenant may still store or `import_max_bytes`,
whichever is less (RESOURCE_EXHAUSTED, and nothing more is read). The archive is then read as a bounded stream
(sessions/archive.py), and what it claims is held to the rules a session created here would meet: its head as
CreateSession takes one (the same input limits, tools and schemas the grammar compiler can enforce), its chat state
as the renderer writes it, its tokens in the vocabulary. Only then is it charged at the tenant's token rate and
stored."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable
from typing import IO

from foundation import wire
from model_worker.server.runtime import WorkerRuntime
from model_worker.server.turn import chat_renderer
from model_worker.sessions import admin
from model_worker.sessions.archive import Export, read_export
from model_worker.sessions.errors import InvalidSessionRequest, TooLarge
from model_worker.structured import ReplySpec
from protos.dsv4.worker.v1 import worker_pb2 as pb


def import_session(runtime: WorkerRuntime, tenant: str, chunks: Iterable[pb.ImportChunk]) -> str:
    """Store the export the client streams as a new session of `tenant`; returns its ID."""
    limits = runtime.import_limits
    left = runtime.store.quota_left(tenant)
    with tempfile.TemporaryFile() as received:
        if left is not None and left < limits.max_bytes:
            session_id = receive(chunks, received, left, "what is left of the tenant's session quota")
        else:
            session_id = receive(chunks, received, limits.max_bytes, "import_max_bytes")
        received.seek(0)
        exported = read_export(received, limits)
    check_export(runtime, exported)
    runtime.admit_tokens(tenant, len(exported.token_ids))
    return admin.store_export(runtime.store, tenant, exported, session_id or None)


def receive(chunks: Iterable[pb.ImportChunk], out: IO[bytes], limit: int, bound: str) -> str:
    """Write a client stream's data to `out`, refusing it as soon as it passes `limit` bytes; returns the session ID
    its first chunk names (later chunks name none, or the same)."""
    session_id, size = None, 0
    for chunk in chunks:
        if session_id is None:
            session_id = chunk.session_id
        elif chunk.session_id and chunk.session_id != session_id:
            raise InvalidSessionRequest("session_id: the first chunk names the session; later ones name none")
        size += len(chunk.data)
        if size > limit:
            raise TooLarge(f"the import is over {limit:,} bytes ({bound})")
        out.write(chunk.data)
    if not size:
        raise InvalidSessionRequest("an import streams the bytes of a session export; none came")
    return session_id or ""


def check_export(runtime: WorkerRuntime, exported: Export) -> None:
    """Hold an export's head, chat state and tokens to what this worker would have stored itself."""
    vocab = runtime.model.config.vocab_size
    commit = exported.commit
    pending = list(commit.chat.pending) if commit.chat is not None else []
    if not isinstance(pending, list) or not all(type(t) is int and 0 <= t < vocab
                                                for t in [*exported.token_ids, *pending]):
        raise InvalidSessionRequest(f"the export's tokens must lie in [0, {vocab})")
    runtime.check_length(len(exported.token_ids) + len(pending))
    head = commit.head
    try:
        request = pb.CreateSessionRequest(
            system_prompt=head.system_prompt or "", think_max=head.think_max,
            tools=[pb.Tool(name=t["function"]["name"], description=t["function"].get("description", ""),
                           parameters_json=json.dumps(t["function"].get("parameters", {})))
                   for t in head.tools or ()],
            response_format_json_schema=json.dumps(head.response_format) if head.response_format else "")
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
        raise InvalidSessionRequest(f"the export's head is not one a session has ({type(exc).__name__})") from None
    inputs = wire.chat_input(request, runtime.limits)
    if tuple(inputs.tools or ()) != head.tools or inputs.response_format != head.response_format:
        raise InvalidSessionRequest("the export's head is not one a session has (tools or response format)")
    runtime.grammars.constraint(ReplySpec(tools=[t["function"] for t in head.tools or ()],
                                          response_format=head.response_format))
    renderer = commit.chat.renderer if commit.chat is not None else None
    if renderer is not None:
        try:
            resumed = chat_renderer(runtime.tokenizer, head, renderer, exported.token_ids).state()
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidSessionRequest(f"the export's chat state does not resume ({type(exc).__name__})") from None
        if resumed != renderer:
            raise InvalidSessionRequest("the export's chat state is not one the renderer writes")
