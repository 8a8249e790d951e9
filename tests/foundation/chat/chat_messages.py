"""Shared by the chat encoding tests: token strings, the Think Max text (reference doc §12, verbatim) and message
builders."""

from __future__ import annotations

B, E = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
U, A, T, TE = "<｜User｜>", "<｜Assistant｜>", "<think>", "</think>"
MAX = (  # reference doc §12, verbatim
    "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
    "You MUST be very thorough in your thinking and comprehensively decompose the problem to "
    "resolve the root cause, rigorously stress-testing your logic against all potential paths, "
    "edge cases, and adversarial scenarios.\n"
    "Explicitly write out your entire deliberation process, documenting every intermediate step, "
    "considered alternative, and rejected hypothesis to ensure absolutely no assumption is left "
    "unchecked.\n\n"
)
LR = "<｜latest_reminder｜>"
D = "｜DSML｜"


def user(text: str, **extra) -> dict:
    return {"role": "user", "content": text, **extra}


def asst(content: str = "", reasoning: str | None = None, calls=None) -> dict:
    msg = {"role": "assistant", "content": content}
    if reasoning is not None:
        msg["reasoning_content"] = reasoning
    if calls:
        msg["tool_calls"] = calls
    return msg


def tool(content: str, call_id: str = "") -> dict:
    return {"role": "tool", "content": content, "tool_call_id": call_id}
