"""OpenAI's response objects as the platform returns them (with DeepSeek's `reasoning_content`), built in one place
for the jobs service's result lines and the gateway."""

from __future__ import annotations

import json
import time
from typing import Any

from model_worker.client import Final, Usage


def usage_object(usage: Usage, continued_session: bool = False) -> dict[str, Any]:
    """OpenAI usage: prompt_tokens counts the whole input the reply was computed from; cached_tokens the part whose
    state was reused (a session's history, a shared prefix) instead of prefilled."""
    prompt = usage.prompt_tokens + (usage.reused_tokens if continued_session else 0)
    return {"prompt_tokens": prompt, "completion_tokens": usage.completion_tokens,
            "total_tokens": prompt + usage.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.reused_tokens},
            "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens}}


def tool_call_objects(calls) -> list[dict[str, Any]]:
    return [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
            for c in calls]


def chat_completion(call_id: str, model: str, final: Final, usage: dict[str, Any]) -> dict[str, Any]:
    """The chat.completion object of a finished generation (`usage` as usage_object gives it)."""
    message: dict[str, Any] = {"role": "assistant", "content": final.content,
                               "reasoning_content": final.reasoning_content or None}
    if final.tool_calls:
        message["tool_calls"] = tool_call_objects(final.tool_calls)
    return {"id": call_id, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": final.finish_reason or "stop"}],
            "usage": usage}
