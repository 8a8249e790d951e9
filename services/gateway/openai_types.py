"""OpenAI request bodies at the edge (pydantic), turned into the typed client's arguments. Fields OpenAI defines
that the platform does not implement are refused by name rather than ignored; unknown fields are ignored as OpenAI's
API ignores them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from model_worker.client import Message, Sampling, Tool
from model_worker.client import convert as wconvert
from services.jobs.spec import MODES

# reasoning_effort (chat) / reasoning.effort (responses) -> DeepSeek-V4's modes: the jobs service's table, so a
# request means the same through a batch line and through the gateway.
EFFORTS = {**{k: v for k, v in MODES.items() if "-" not in k}, "xhigh": "think-max"}


class Edge(BaseModel):
    model_config = ConfigDict(extra="ignore")


class FunctionDef(Edge):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class ToolDef(Edge):
    type: Literal["function"] = "function"
    function: FunctionDef


class GenerationFields(Edge):
    """What chat completions and responses share: sampling, tools, the reasoning mode."""

    model: str
    tools: list[ToolDef] | None = None
    tool_choice: str | dict[str, Any] | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)

    def worker_tools(self) -> list[Tool] | None:
        if not self.tools:
            return None
        return [Tool(t.function.name, t.function.description, t.function.parameters) for t in self.tools]

    def worker_tool_choice(self) -> str | None:
        choice = self.tool_choice
        if choice is None or isinstance(choice, str):
            if choice not in (None, "auto", "none", "required"):
                raise ValueError("tool_choice: auto, none, required or {type: function, function: {name}}")
            return choice
        name = (choice.get("function") or {}).get("name") or choice.get("name")
        if not name:
            raise ValueError("tool_choice: a named choice needs function.name")
        return name

    def sampling(self, max_tokens: int | None) -> Sampling:
        stops = [self.stop] if isinstance(self.stop, str) else self.stop
        try:
            bias = {int(k): v for k, v in (self.logit_bias or {}).items()}
        except ValueError:
            raise ValueError("logit_bias: keys are token ids") from None
        return Sampling(temperature=self.temperature, top_p=self.top_p, seed=self.seed, max_tokens=max_tokens,
                        stop=stops or None, frequency_penalty=self.frequency_penalty,
                        presence_penalty=self.presence_penalty, logit_bias=bias or None,
                        logprobs=self.logprobs, top_logprobs=self.top_logprobs or None)


class StreamOptions(Edge):
    include_usage: bool = False


class ChatCompletionRequest(GenerationFields):
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, gt=0)
    max_completion_tokens: int | None = Field(None, gt=0)
    response_format: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    n: int = 1

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int) -> int:
        if n != 1:
            raise ValueError("only n=1 is supported (one choice per request)")
        return n

    def mode(self) -> str:
        return effort_mode(self.reasoning_effort)

    def worker_messages(self) -> list[Message]:
        return [wconvert.message_from_openai({**m, "content": text_of(m.get("content"))}) for m in self.messages]

    def schema(self) -> dict[str, Any] | None:
        return response_schema(self.response_format)


def effort_mode(effort: str | None) -> str:
    if effort is None:
        return "non-think"
    if effort not in EFFORTS:
        raise ValueError(f"reasoning effort: one of {', '.join(EFFORTS)}")
    return EFFORTS[effort]


def text_of(content: Any) -> str:
    """Message content as text: a string, or text parts joined (other part kinds are refused)."""
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for part in content:
        if part.get("type") not in ("text", "input_text", "output_text"):
            raise ValueError(f"content parts of type {part.get('type')!r} are not supported (text only)")
        parts.append(part.get("text") or "")
    return "".join(parts)


def response_schema(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """OpenAI's response_format (chat) or text.format (responses) as the JSON schema the worker enforces."""
    if not response_format or response_format.get("type") == "text":
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        spec = response_format.get("json_schema", response_format)  # chat nests it; responses does not
        if not isinstance(spec.get("schema"), dict):
            raise ValueError("response_format.json_schema.schema: a JSON schema object")
        return spec["schema"]
    raise ValueError("response_format.type: text, json_object or json_schema")
