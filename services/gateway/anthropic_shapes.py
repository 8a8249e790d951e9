"""Anthropic's response shapes: the `message` object of a finished generation, its usage (cache reads are the
prefix the worker reused), and the server-sent events of a streamed one, in the order the official SDK's
accumulator expects (message_start; per block content_block_start, its deltas, content_block_stop; message_delta
with the stop reason and usage; message_stop)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from foundation.clients.worker import Delta, Final, ToolCall, Usage

STOP_REASONS = {"length": "max_tokens", "tool_calls": "tool_use"}


def usage(usage: Usage) -> dict[str, int]:
    """input_tokens counts the input prefilled for this reply; cache_read_input_tokens the prefix whose state the
    worker reused; a stateless reply writes no cache the caller could count on (0)."""
    return {"input_tokens": usage.prompt_tokens - usage.reused_tokens, "output_tokens": usage.completion_tokens,
            "cache_read_input_tokens": usage.reused_tokens, "cache_creation_input_tokens": 0}


def stop(final: Final) -> tuple[str, str | None]:
    """The stop_reason and stop_sequence of a finished generation."""
    if final.finish_reason == "stop" and final.matched_stop:
        return "stop_sequence", final.matched_stop
    return STOP_REASONS.get(final.finish_reason, "end_turn"), None


def tool_use(call: ToolCall) -> dict[str, Any]:
    return {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}


def message(message_id: str, model: str, final: Final, sign: Callable[[str], str]) -> dict[str, Any]:
    """The message object of a finished generation; its thinking block signed with `sign`."""
    content: list[dict[str, Any]] = []
    if final.reasoning_content:
        content.append({"type": "thinking", "thinking": final.reasoning_content,
                        "signature": sign(final.reasoning_content)})
    if final.content:
        content.append({"type": "text", "text": final.content})
    content += [tool_use(call) for call in final.tool_calls]
    reason, sequence = stop(final)
    return {"id": message_id, "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": reason, "stop_sequence": sequence, "usage": usage(final.usage)}


def event(kind: str, **fields: Any) -> str:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **fields}, ensure_ascii=False)}\n\n"


class StreamShaper:
    """A generation's events as Anthropic's stream: one content block open at a time (thinking, text, each
    tool_use), closed as the next kind begins; the thinking block's signature as its last delta."""

    def __init__(self, message_id: str, model: str, sign: Callable[[str], str]) -> None:
        self.message_id, self.model, self.sign = message_id, model, sign
        self.index, self.open, self.thinking = -1, None, []

    def start(self) -> str:
        empty = {"input_tokens": 0, "output_tokens": 0}
        return event("message_start", message={"id": self.message_id, "type": "message", "role": "assistant",
                                               "model": self.model, "content": [], "stop_reason": None,
                                               "stop_sequence": None, "usage": empty})

    def feed(self, item: Delta | ToolCall | Final) -> Iterator[str]:
        if isinstance(item, Delta) and item.text:
            kind = "thinking" if item.reasoning else "text"
            if self.open != kind:
                yield from self._begin(kind, {"type": kind, kind: "", **({"signature": ""} if item.reasoning else {})})
            if item.reasoning:
                self.thinking.append(item.text)
                yield self._delta({"type": "thinking_delta", "thinking": item.text})
            else:
                yield self._delta({"type": "text_delta", "text": item.text})
        elif isinstance(item, ToolCall):
            yield from self._begin("tool_use", {**tool_use(item), "input": {}})
            yield self._delta({"type": "input_json_delta", "partial_json": json.dumps(item.arguments)})
            yield from self._close()
        elif isinstance(item, Final):
            yield from self._close()
            reason, sequence = stop(item)
            yield event("message_delta", delta={"stop_reason": reason, "stop_sequence": sequence},
                        usage=usage(item.usage))
            yield event("message_stop")

    def _begin(self, kind: str, block: dict[str, Any]) -> Iterator[str]:
        yield from self._close()
        self.index, self.open = self.index + 1, kind
        yield event("content_block_start", index=self.index, content_block=block)

    def _delta(self, delta: dict[str, Any]) -> str:
        return event("content_block_delta", index=self.index, delta=delta)

    def _close(self) -> Iterator[str]:
        if self.open is None:
            return
        if self.open == "thinking":
            yield self._delta({"type": "signature_delta", "signature": self.sign("".join(self.thinking))})
            self.thinking = []
        yield event("content_block_stop", index=self.index)
        self.open = None
