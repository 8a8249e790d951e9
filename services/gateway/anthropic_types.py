"""Anthropic Messages request bodies at the edge (pydantic), turned into the typed worker client's arguments.

The mapping: `system` (a string or text blocks) is the system message; a message's blocks become the worker's
messages (text joined, `tool_use` an assistant's tool calls, each `tool_result` a tool message, `thinking` the
assistant's reasoning_content, once its signature verifies); `thinking` enabled runs Think High, or Think Max with a
budget of THINK_MAX_BUDGET tokens or more (the worker has no budget of its own: `max_tokens` bounds reasoning and
answer together), disabled or absent Non-think; `tool_choice` auto/any/tool/none is the worker's
auto/required/NAME/none; `stop_sequences` the worker's stops. Blocks the platform does not take (images,
documents, redacted thinking) are refused by name, never dropped."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any, Literal

from pydantic import Field

from foundation.clients.worker import Message, Sampling, Tool, ToolCall
from services.gateway.openai_types import FUNCTION_NAME, Edge
from services.openai_shapes import InputLimits, cache_affinity, check_depth

THINK_MAX_BUDGET = 32768  # budget_tokens from here up: Think Max; below: Think High


def sign_thinking(key: bytes, thinking: str) -> str:
    """A thinking block's signature: an HMAC over its text with the gateway's key, so a client sending the block
    back cannot have changed it."""
    return base64.b64encode(hmac.new(key, thinking.encode(), hashlib.sha256).digest()).decode()


class ToolSpec(Edge):
    name: str = Field(min_length=1, max_length=64, pattern=FUNCTION_NAME)
    description: str = ""
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    type: str | None = None  # "custom" or absent; Anthropic's server tools are refused

    def worker_tool(self, index: int) -> Tool:
        if self.type not in (None, "custom"):
            raise ValueError(f"tools[{index}]: tools of type {self.type!r} are not supported (custom tools only)")
        return Tool(self.name, self.description, self.input_schema)


class Thinking(Edge):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = Field(None, ge=1024)


class ToolChoice(Edge):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool = False


class InputMessage(Edge):
    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]


class CountTokensRequest(Edge):
    model: str
    messages: list[InputMessage] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    tools: list[ToolSpec] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    cache_control: dict[str, Any] | None = None  # on the request: a breakpoint after its last block

    def mode(self) -> str:
        if self.thinking is None or self.thinking.type == "disabled":
            return "non-think"
        return "think-max" if (self.thinking.budget_tokens or 0) >= THINK_MAX_BUDGET else "think-high"

    def worker_tools(self) -> list[Tool] | None:
        return [tool.worker_tool(i) for i, tool in enumerate(self.tools)] if self.tools else None

    def worker_tool_choice(self) -> str | None:
        choice = self.tool_choice
        if choice is None:
            return None
        if choice.type != "tool":
            return {"auto": "auto", "any": "required", "none": "none"}[choice.type]
        names = [tool.name for tool in self.tools or ()]
        if choice.name not in names:
            raise ValueError(f"tool_choice.name: {choice.name!r} is not among the tools ({', '.join(names) or 'none'})")
        return choice.name

    def parallel_tool_calls(self) -> bool:
        """False with `disable_parallel_tool_use`: at most one call, by the reply's grammar."""
        return not (self.tool_choice is not None and self.tool_choice.disable_parallel_tool_use)

    def check(self, limits: InputLimits) -> None:
        limits.check(len(self.messages) + 1, [tool.input_schema for tool in self.tools or ()], None)

    def worker_messages(self, key: bytes, max_depth: int) -> list[Message]:
        """The conversation as the worker's messages; a thinking block whose signature is not the gateway's is a
        ValueError (400)."""
        out = [Message("system", _text(self.system, "system"))] if self.system else []
        for i, message in enumerate(self.messages):
            where = f"messages[{i}].content"
            blocks = [{"type": "text", "text": message.content}] if isinstance(message.content, str) \
                else message.content
            if message.role == "user":
                out.extend(_user_messages(blocks, where))
            else:
                out.append(_assistant_message(blocks, where, key, max_depth))
        return out

    def affinity(self, tenant: str) -> str:
        """What keeps calls sharing a cached prefix on the worker holding it: the request up to its last
        `cache_control` breakpoint (tools, system, messages, in Anthropic's cache order), else its opening."""
        parts: list[Any] = [tool.model_dump() for tool in self.tools or ()]
        parts += self.system if isinstance(self.system, list) else [self.system or ""]
        for message in self.messages:
            parts += [message.role, *(message.content if isinstance(message.content, list) else [message.content])]
        marked = [i for i, part in enumerate(parts) if isinstance(part, dict) and part.get("cache_control")]
        if self.cache_control:
            marked.append(len(parts) - 1)
        prefix = parts[:marked[-1] + 1] if marked else parts[:len(self.tools or ()) + 3]
        return cache_affinity(tenant, None, prefix)


class MessagesRequest(CountTokensRequest):
    max_tokens: int = Field(gt=0)
    stop_sequences: list[str] | None = Field(None, max_length=16)
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, gt=0)
    stream: bool = False
    metadata: dict[str, Any] | None = None  # user_id: accepted, not kept

    def sampling(self) -> Sampling:
        return Sampling(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k, max_tokens=self.max_tokens,
                        stop=self.stop_sequences or None)


def _text(content: Any, where: str) -> str:
    """Text content: a string, or text blocks joined."""
    if isinstance(content, str):
        return content
    return "".join(_block_text(block, f"{where}[{i}]") for i, block in enumerate(content))


def _block_text(block: dict[str, Any], where: str) -> str:
    if block.get("type") != "text":
        raise ValueError(f"{where}: blocks of type {block.get('type')!r} are not supported here (text only)")
    if not isinstance(block.get("text"), str):
        raise ValueError(f"{where}.text: a string")
    return block["text"]


def _user_messages(blocks: list[dict[str, Any]], where: str) -> list[Message]:
    """A user turn: each tool_result a tool message (first, as they answer the previous turn's calls), then its
    text as one user message."""
    results, text = [], []
    for i, block in enumerate(blocks):
        kind = block.get("type")
        if kind == "tool_result":
            content = block.get("content") or ""
            body = _text(content, f"{where}[{i}].content")
            results.append(Message("tool", f"Error: {body}" if block.get("is_error") else body,
                                   tool_call_id=str(block.get("tool_use_id") or "")))
        elif kind == "text":
            text.append(_block_text(block, f"{where}[{i}]"))
        else:
            raise ValueError(f"{where}[{i}]: blocks of type {kind!r} are not supported (text and tool_result)")
    return results + ([Message("user", "".join(text))] if text else [])


def _assistant_message(blocks: list[dict[str, Any]], where: str, key: bytes, max_depth: int) -> Message:
    text, reasoning, calls = [], [], []
    for i, block in enumerate(blocks):
        kind = block.get("type")
        if kind == "text":
            text.append(_block_text(block, f"{where}[{i}]"))
        elif kind == "thinking":
            thinking = block.get("thinking")
            if not isinstance(thinking, str):
                raise ValueError(f"{where}[{i}].thinking: a string")
            signature = block.get("signature")
            if not isinstance(signature, str) or not hmac.compare_digest(signature, sign_thinking(key, thinking)):
                raise ValueError(f"{where}[{i}].signature: does not match the thinking (not this gateway's, or "
                                 "the thinking was changed)")
            reasoning.append(thinking)
        elif kind == "tool_use":
            arguments = block.get("input")
            if not isinstance(arguments, dict):
                raise ValueError(f"{where}[{i}].input: an object")
            check_depth(arguments, max_depth, f"{where}[{i}].input")
            calls.append(ToolCall(str(block.get("id") or ""), str(block.get("name") or ""), arguments))
        else:
            raise ValueError(f"{where}[{i}]: blocks of type {kind!r} are not supported in an assistant turn "
                             "(text, thinking, tool_use)")
    return Message("assistant", "".join(text), "".join(reasoning), calls)
