"""What the gateway may answer, as the `openai` SDK's types read it (the `anthropic` SDK's under /v1/messages): each
operation's 2xx body (or its server-sent events) and every error body. A route with no entry here fails the fuzzing
until it has one."""

from __future__ import annotations

import json

from anthropic.types import ErrorResponse as AnthropicError
from anthropic.types import Message, MessageTokensCount, RawMessageStreamEvent
from openai.pagination import SyncCursorPage, SyncPage
from openai.types import Batch, Completion, FileDeleted, FileObject, Model, ModelDeleted
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseItemList, ResponseStreamEvent
from openai.types.shared import ErrorObject
from pydantic import TypeAdapter

RAW = None  # a body the SDK hands over as bytes (file content, Prometheus text)
JSON_OBJECT = dict  # plain JSON the SDK does not model (/healthz)
BODIES = {
    ("GET", "/healthz"): JSON_OBJECT, ("GET", "/metrics"): RAW,
    ("GET", "/v1/models"): SyncPage[Model], ("GET", "/v1/models/{model_id}"): Model,
    ("POST", "/v1/chat/completions"): ChatCompletion,
    ("POST", "/v1/responses"): Response, ("GET", "/v1/responses/{response_id}"): Response,
    ("DELETE", "/v1/responses/{response_id}"): ModelDeleted,  # {id, object: "response.deleted", deleted}
    ("POST", "/v1/responses/{response_id}/cancel"): Response,
    ("GET", "/v1/responses/{response_id}/input_items"): ResponseItemList,
    ("POST", "/v1/files"): FileObject, ("GET", "/v1/files"): SyncCursorPage[FileObject],
    ("GET", "/v1/files/{file_id}"): FileObject, ("DELETE", "/v1/files/{file_id}"): FileDeleted,
    ("GET", "/v1/files/{file_id}/content"): RAW,
    ("POST", "/v1/batches"): Batch, ("GET", "/v1/batches"): SyncCursorPage[Batch],
    ("GET", "/v1/batches/{batch_id}"): Batch, ("POST", "/v1/batches/{batch_id}/cancel"): Batch,
    ("POST", "/v1/messages"): Message, ("POST", "/v1/messages/count_tokens"): MessageTokensCount,
    ("POST", "/v1/completions"): Completion,
}
STREAMS = {("POST", "/v1/chat/completions"): ChatCompletionChunk, ("POST", "/v1/responses"): ResponseStreamEvent,
           ("POST", "/v1/messages"): RawMessageStreamEvent, ("POST", "/v1/completions"): Completion}
ANTHROPIC = "/v1/messages"  # the routes under it answer errors in Anthropic's shape


def _parse(kind, value) -> None:
    if kind is JSON_OBJECT:
        assert isinstance(value, dict), value
    else:
        TypeAdapter(kind).validate_python(value)


def error_body(value) -> None:
    """OpenAI's error shape: {"error": {"message", "type", "param", "code"}}."""
    assert isinstance(value, dict) and set(value) == {"error"}, value
    ErrorObject.model_validate(value["error"])


def anthropic_error(value) -> None:
    """Anthropic's error shape: {"type": "error", "error": {"type", "message"}}."""
    assert isinstance(value, dict) and value.get("type") == "error", value
    AnthropicError.model_validate(value)


def events(text: str) -> list[dict]:
    """The JSON payloads of a server-sent event stream (its `data:` lines), the closing [DONE] left out."""
    payloads = [line[len("data:"):].strip() for line in text.splitlines() if line.startswith("data:")]
    return [json.loads(p) for p in payloads if p != "[DONE]"]


def check(operation: tuple[str, str], status: int, content_type: str, content: bytes) -> None:
    """Raises (AssertionError or pydantic's ValidationError) unless the answer is one the SDK reads."""
    assert status < 500, f"server error {status}"
    anthropic = operation[1].startswith(ANTHROPIC)
    if status >= 400:
        (anthropic_error if anthropic else error_body)(json.loads(content))
        return
    assert operation in BODIES, f"{operation}: a new route needs its OpenAI type in {__name__}.BODIES"
    if content_type.startswith("text/event-stream"):
        assert operation in STREAMS, f"{operation} streamed, but it has no stream type"
        for event in events(content.decode()):
            if anthropic and event.get("type") == "error":
                anthropic_error(event)
            elif not anthropic and set(event) == {"error"}:
                error_body(event)
            else:
                _parse(STREAMS[operation], event)
    elif BODIES[operation] is not RAW:
        _parse(BODIES[operation], json.loads(content))
