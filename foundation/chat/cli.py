"""`render` and `parse` subcommands (wired into `python -m model_worker` by the lead):

render --messages FILE.json --mode non-think|think-high|think-max [--keep-thinking] --out FILE.txt
parse --completion FILE.txt --mode ... --out FILE.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from foundation.chat.encoding import render_prompt
from foundation.chat.errors import MessageFormatError
from foundation.chat.messages import attach_tools
from foundation.chat.parsing import parse_completion
from foundation.chat.protocol import ChatMode

_MODES = [m.value for m in ChatMode]


def load_messages(data: Any) -> list[dict[str, Any]]:
    """A messages file holds a list of messages or {"messages": [...], "tools": [...],
    "response_format": {...}}; request-level tools go on the first system/developer message."""
    if isinstance(data, list):
        return data
    if isinstance(data, dict) and isinstance(data.get("messages"), list):
        return attach_tools(data["messages"], data.get("tools"), data.get("response_format"))
    raise MessageFormatError(
        'messages file must hold a list of messages or {"messages": [...], "tools": [...]}'
    )


def _read_text(path: str | Path) -> str:
    # newline="" keeps "\r\n" and friends exactly as written: the bytes are the protocol.
    with open(path, encoding="utf-8", newline="") as f:
        return f.read()


def _write_text(path: str | Path, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def render_command(
    messages_path: str | Path, mode: str, keep_thinking: bool, out_path: str | Path
) -> None:
    """Write the exact prompt text of a messages file (UTF-8, nothing added)."""
    messages = load_messages(json.loads(_read_text(messages_path)))
    _write_text(
        out_path, render_prompt(messages, ChatMode.parse(mode), keep_thinking=keep_thinking)
    )


def parse_command(completion_path: str | Path, mode: str, out_path: str | Path) -> None:
    """Write the parse of a completion file as JSON (non-ASCII kept)."""
    result = parse_completion(_read_text(completion_path), ChatMode.parse(mode))
    _write_text(out_path, json.dumps(result.to_dict(), ensure_ascii=False, indent=2) + "\n")


def add_render_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `render`; the parsed namespace's `func(args)` runs it."""
    p = subparsers.add_parser(
        "render", help="render chat messages to the exact DeepSeek-V4 prompt text"
    )
    p.add_argument("--messages", required=True, help="JSON list of messages or {messages, tools}")
    p.add_argument("--mode", required=True, choices=_MODES)
    p.add_argument(
        "--keep-thinking", action="store_true", help="keep the reasoning of earlier turns"
    )
    p.add_argument("--out", required=True, help="output text file")
    p.set_defaults(func=lambda a: render_command(a.messages, a.mode, a.keep_thinking, a.out))
    return p


def add_parse_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `parse`; the parsed namespace's `func(args)` runs it."""
    p = subparsers.add_parser(
        "parse", help="parse a raw completion into reasoning, content and tool calls"
    )
    p.add_argument(
        "--completion", required=True, help="completion text file (after the generation prefix)"
    )
    p.add_argument("--mode", required=True, choices=_MODES)
    p.add_argument("--out", required=True, help="output JSON file")
    p.set_defaults(func=lambda a: parse_command(a.completion, a.mode, a.out))
    return p
