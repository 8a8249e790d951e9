"""The Response object as the official `openai` SDK parses it: its output items, usage and streamed events. The
request side is in responses_request.py, routes and the session mapping in responses.py."""

from __future__ import annotations

import json
from typing import Any

from foundation.clients.worker import Delta, ToolCall
from services.gateway.responses_request import ResponsesRequest, item_id


def new_response(response_id: str, body: ResponsesRequest, model: str, conversation: dict[str, Any],
                 created_at: int) -> dict[str, Any]:
    """The Response as it starts (in_progress, no output); `conversation` holds the instructions and tools."""
    return {"id": response_id, "object": "response", "created_at": created_at, "status": "in_progress",
            "background": body.background, "error": None, "incomplete_details": None,
            "instructions": conversation["instructions"] or None, "max_output_tokens": body.max_output_tokens,
            "metadata": body.metadata or {}, "model": model, "output": [], "parallel_tool_calls": True,
            "previous_response_id": body.previous_response_id,
            "reasoning": {"effort": body.effort(), "summary": None}, "store": body.store,
            "temperature": body.temperature, "text": {"format": (body.text or {}).get("format") or {"type": "text"}},
            "tool_choice": body.tool_choice or "auto",
            "tools": [{"type": "function", **tool, "strict": None} for tool in conversation["tools"]],
            "top_p": body.top_p, "truncation": "disabled", "usage": None, "user": body.user, "completed_at": None}


def ended(response: dict[str, Any], output: list[dict[str, Any]], finish_reason: str, usage: dict[str, Any],
          completed_at: int) -> dict[str, Any]:
    """The Response once its generation ended (a reply cut at max_output_tokens is `incomplete`, as OpenAI has it)."""
    status = {"length": "incomplete", "cancelled": "cancelled"}.get(finish_reason, "completed")
    details = {"reason": "max_output_tokens"} if status == "incomplete" else None
    return {**response, "status": status, "output": output, "usage": usage, "incomplete_details": details,
            "completed_at": completed_at}


def failed(response: dict[str, Any], message: str, completed_at: int) -> dict[str, Any]:
    return {**response, "status": "failed", "error": {"code": "server_error", "message": message},
            "completed_at": completed_at}


def from_completion(response: dict[str, Any], completion: dict[str, Any], cancelled: bool, fresh_tokens: int,
                    stored: bool, completed_at: int) -> dict[str, Any]:
    """The Response a background job's result (a chat.completion) gives; its prompt_tokens count only the new
    input, the reused history is its cached tokens. `stored`: the job's session is kept to go on from."""
    [choice], counted = completion["choices"], completion["usage"]
    message, cached = choice["message"], counted["prompt_tokens_details"]["cached_tokens"]
    calls = [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in message.get("tool_calls") or []]
    output = output_items(response["id"], message.get("content") or "", message.get("reasoning_content") or "", calls)
    usage = response_usage(counted["prompt_tokens"] + cached, cached - fresh_tokens, counted["completion_tokens"],
                           counted["completion_tokens_details"]["reasoning_tokens"], stored)
    return ended(response, output, "cancelled" if cancelled else choice["finish_reason"], usage, completed_at)


def response_usage(input_tokens: int, cached_tokens: int, output_tokens: int, reasoning_tokens: int,
                   stored: bool) -> dict:
    """OpenAI's usage of a Response. The cache is the conversation's worker session: cached_tokens were read from it
    (or from a shared prefix), cache_write_tokens computed by this request and written to it, which is every input
    token not read when the response is stored (a later one goes on from that session), and none when it is not."""
    cached = min(max(0, cached_tokens), input_tokens)
    written = input_tokens - cached if stored else 0
    return {"input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": written},
            "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
            "total_tokens": input_tokens + output_tokens}


def output_items(response_id: str, content: str, reasoning: str, calls: list[tuple[str, str, str]]
                 ) -> list[dict[str, Any]]:
    """A finished reply's output: its reasoning, its message (when it has text, or nothing else came), its calls as
    (call id, name, arguments as JSON text); item ids as the streamed events give them."""
    items = []
    if reasoning:
        items.append(_text_item("reasoning", item_id("rs", response_id, len(items)), reasoning))
    if content or not (reasoning or calls):
        items.append(_text_item("message", item_id("msg", response_id, len(items)), content))
    for call in calls:
        items.append(_call_item(item_id("fc", response_id, len(items)), *call))
    return items


def _text_item(kind: str, item_id: str, text: str | None, status: str = "completed") -> dict[str, Any]:
    """A reasoning or message item; `text` None leaves its content empty (as a streamed item starts)."""
    parts = [] if text is None else [_part(kind, text)]
    if kind == "reasoning":
        return {"type": "reasoning", "id": item_id, "summary": [], "content": parts, "status": status}
    return {"type": "message", "id": item_id, "role": "assistant", "content": parts, "status": status}


def _part(kind: str, text: str) -> dict[str, Any]:
    if kind == "reasoning":
        return {"type": "reasoning_text", "text": text}
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _call_item(item_id: str, call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"type": "function_call", "id": item_id, "call_id": call_id, "name": name, "arguments": arguments,
            "status": "completed"}


class EventStream:
    """The server-sent events of one streamed response: each output item opened, its text deltas, and the item
    whole when it closes. `items` is the output so far, in order (the final Response carries it)."""

    def __init__(self, response_id: str) -> None:
        self.response_id, self.items, self.sequence = response_id, [], 0
        self.open: str | None = None  # the kind of the last item while its text still grows

    def event(self, kind: str, **fields: Any) -> str:
        data = json.dumps({"type": kind, "sequence_number": self.sequence, **fields}, ensure_ascii=False)
        self.sequence += 1
        return f"event: {kind}\ndata: {data}\n\n"

    def feed(self, event: Any) -> list[str]:
        if isinstance(event, ToolCall):
            return self.close() + self._call(event)
        if not isinstance(event, Delta) or not event.text:
            return []
        kind = "reasoning" if event.reasoning else "message"
        chunks = [] if self.open == kind else self.close() + self._start(kind)
        index, item = len(self.items) - 1, self.items[-1]
        item["content"][0]["text"] += event.text
        name = "response.reasoning_text.delta" if kind == "reasoning" else "response.output_text.delta"
        extra = {} if kind == "reasoning" else {"logprobs": []}
        chunks.append(self.event(name, item_id=item["id"], output_index=index, content_index=0, delta=event.text,
                                 **extra))
        return chunks

    def close(self) -> list[str]:
        if self.open is None:
            return []
        index, item = len(self.items) - 1, self.items[-1]
        part, where = item["content"][0], {"item_id": item["id"], "output_index": index, "content_index": 0}
        item["status"], self.open = "completed", None
        name = "response.reasoning_text.done" if item["type"] == "reasoning" else "response.output_text.done"
        extra = {} if item["type"] == "reasoning" else {"logprobs": []}
        return [self.event(name, **where, text=part["text"], **extra),
                self.event("response.content_part.done", **where, part=part),
                self.event("response.output_item.done", output_index=index, item=item)]

    def _start(self, kind: str) -> list[str]:
        index = len(self.items)
        item = _text_item(kind, item_id("rs" if kind == "reasoning" else "msg", self.response_id, index), None,
                          status="in_progress")
        chunks = [self.event("response.output_item.added", output_index=index, item=item)]
        item["content"].append(_part(kind, ""))
        chunks.append(self.event("response.content_part.added", item_id=item["id"], output_index=index,
                                 content_index=0, part=item["content"][0]))
        self.items.append(item)
        self.open = kind
        return chunks

    def _call(self, call: ToolCall) -> list[str]:
        index, arguments = len(self.items), json.dumps(call.arguments)
        item = _call_item(item_id("fc", self.response_id, index), call.id, call.name, arguments)
        self.items.append(item)
        return [self.event("response.output_item.added", output_index=index,
                           item={**item, "arguments": "", "status": "in_progress"}),
                self.event("response.function_call_arguments.delta", item_id=item["id"], output_index=index,
                           delta=arguments),
                self.event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                           name=call.name, arguments=arguments),
                self.event("response.output_item.done", output_index=index, item=item)]
