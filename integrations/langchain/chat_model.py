"""`ChatDeepSeekV4`: LangChain's chat model on the model worker's gRPC API (foundation.clients.worker).

Streaming (reasoning and content deltas, tool calls as they complete, usage last), tools with tool_choice and
structured output by the worker's constrained decoding, the reasoning modes, and persistent worker sessions keyed by
the LangGraph thread (`configurable.thread_id`), so a graph's next step prefills only its new messages
(sessions.py). Example:

    model = ChatDeepSeekV4(target="127.0.0.1:50051", reasoning_mode="think-high", max_tokens=256)
    agent = create_react_agent(model, [tool], checkpointer=InMemorySaver())
    agent.invoke({"messages": [("user", "...")]}, {"configurable": {"thread_id": "t1"}})
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig, ensure_config
from langchain_core.tools import BaseTool
from langchain_core.utils import from_env, secret_from_env
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr, model_validator

from foundation.clients.worker import Delta, Event, Final, NotFound, Sampling, ToolCall
from integrations.langchain import convert
from integrations.langchain.connections import WorkerConnections
from integrations.langchain.sessions import ThreadSessions
from integrations.langchain.structured import Method, structured_output
from integrations.langchain.turns import AsyncTurns, BlockingTurns, Call, TurnInfo

ReasoningMode = Literal["non-think", "think-high", "think-max"]
# What a call (or a `bind`) may pass besides messages and stop; anything else is refused, not silently dropped.
CALL_ARGUMENTS = ("tools", "tool_choice", "response_format", "thread_id", "reasoning_mode", "reasoning_effort",
                  "temperature", "top_p", "max_tokens", "seed", "stream")


class ChatDeepSeekV4(BaseChatModel):
    """A DeepSeek-V4 model worker as a LangChain chat model.

    `target` is the worker's HOST:PORT (several, comma-separated, are routed by load), or leave it empty and give
    `registry_url` (redis://...: the workers' registry, which routes each session to the worker holding it).
    `model` only names the model in traces and response metadata: a worker serves the model it was started with.
    Reasoning: `reasoning_mode` ("non-think", "think-high", "think-max") or OpenAI's `reasoning_effort`; the reply's
    reasoning is in `additional_kwargs["reasoning_content"]` (a reasoning block of `content_blocks`).

    Sessions: a call with a `thread_id` (LangGraph's `configurable.thread_id`, or `.bind(thread_id=...)`) runs on
    a worker session of that thread and sends only the messages the session lacks; a history that does not extend
    it (time travel, an edited message) forks it at the longest matching commit. The map from threads to sessions
    lives in this model instance (memory, this process): see sessions.py. `thread_sessions=False` sends whole
    histories (the worker's prefix cache still reuses what it computed for an earlier request).
    """

    model_name: str = Field(default="deepseek-v4", alias="model")
    target: str = Field(default_factory=from_env("DSV4_WORKER_TARGET", default="127.0.0.1:50051"))
    registry_url: str | None = None
    api_key: SecretStr | None = Field(default_factory=secret_from_env("DSV4_API_KEY", default=None))
    reasoning_mode: ReasoningMode | None = None
    reasoning_effort: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    seed: int | None = None
    stop: list[str] | None = None
    timeout: float | None = None  # seconds, per worker call
    max_retries: int = 3  # a call that found no worker (UNAVAILABLE) is retried this often
    streaming: bool = False
    thread_sessions: bool = True
    max_threads: int = 1024  # threads whose sessions are remembered (least recently used forgotten first)

    model_config = ConfigDict(populate_by_name=True)

    _connections: WorkerConnections = PrivateAttr()
    _sessions: ThreadSessions = PrivateAttr()

    @model_validator(mode="after")
    def _check_reasoning(self) -> ChatDeepSeekV4:
        if self.reasoning_mode is not None and self.reasoning_effort is not None:
            raise ValueError("give reasoning_mode or reasoning_effort, not both")
        _mode(self.reasoning_effort)
        return self

    def model_post_init(self, context: Any) -> None:
        key = self.api_key.get_secret_value() if self.api_key else None
        self._connections = WorkerConnections(self.target, self.registry_url, api_key=key, timeout=self.timeout,
                                              retries=self.max_retries)
        self._sessions = ThreadSessions(max_threads=self.max_threads)

    @property
    def _llm_type(self) -> str:
        return "deepseek-v4-worker"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "target": self.target, "registry_url": self.registry_url,
                "reasoning_mode": self.reasoning_mode or _mode(self.reasoning_effort), "temperature": self.temperature,
                "top_p": self.top_p, "max_tokens": self.max_tokens, "seed": self.seed}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(ls_provider="deepseek", ls_model_name=kwargs.get("model", self.model_name),
                                 ls_model_type="chat")
        for name in ("temperature", "max_tokens"):
            value = kwargs.get(name, getattr(self, name))
            if value is not None:
                params[f"ls_{name}"] = value  # type: ignore[literal-required]
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    # -- the thread of a LangGraph run -----------------------------------------------------------------------------

    def invoke(self, input: LanguageModelInput, config: RunnableConfig | None = None, *,
               stop: list[str] | None = None, **kwargs: Any) -> AIMessage:
        return super().invoke(input, config, stop=stop, **self._with_thread(config, kwargs))

    async def ainvoke(self, input: LanguageModelInput, config: RunnableConfig | None = None, *,
                      stop: list[str] | None = None, **kwargs: Any) -> AIMessage:
        return await super().ainvoke(input, config, stop=stop, **self._with_thread(config, kwargs))

    def stream(self, input: LanguageModelInput, config: RunnableConfig | None = None, *,
               stop: list[str] | None = None, **kwargs: Any) -> Iterator[AIMessageChunk]:
        return super().stream(input, config, stop=stop, **self._with_thread(config, kwargs))

    def astream(self, input: LanguageModelInput, config: RunnableConfig | None = None, *,
                stop: list[str] | None = None, **kwargs: Any) -> AsyncIterator[AIMessageChunk]:
        return super().astream(input, config, stop=stop, **self._with_thread(config, kwargs))

    def _with_thread(self, config: RunnableConfig | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The run's thread (its config's, or LangGraph's node config in context) joins the call's arguments: the
        model's own methods see arguments, not configs."""
        if not self.thread_sessions or "thread_id" in kwargs:
            return kwargs
        thread_id = ensure_config(config).get("configurable", {}).get("thread_id")
        return kwargs if thread_id is None else {**kwargs, "thread_id": str(thread_id)}

    # -- calls ---------------------------------------------------------------------------------------------------

    def _call(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]) -> Call:
        unknown = sorted(set(kwargs) - set(CALL_ARGUMENTS))
        if unknown:
            raise TypeError(f"unexpected arguments {', '.join(unknown)}; a call takes {', '.join(CALL_ARGUMENTS)} "
                            "(a worker serves one model: choose it by target, not per call)")
        tools = [convert.tool(t) for t in kwargs.get("tools") or ()]
        if "reasoning_mode" in kwargs or "reasoning_effort" in kwargs:
            mode = kwargs.get("reasoning_mode") or _mode(kwargs.get("reasoning_effort"))
        else:
            mode = self.reasoning_mode or _mode(self.reasoning_effort)
        sampling = Sampling(temperature=kwargs.get("temperature", self.temperature),
                            top_p=kwargs.get("top_p", self.top_p), max_tokens=kwargs.get("max_tokens", self.max_tokens),
                            seed=kwargs.get("seed", self.seed), stop=(stop or self.stop) or None)
        thread_id = kwargs.get("thread_id") if self.thread_sessions else None
        choice = convert.tool_choice(kwargs.get("tool_choice"), tools)
        return Call(convert.conversation(messages), sampling, tools, choice,
                    convert.response_schema(kwargs.get("response_format")), mode, thread_id)

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        info, call = TurnInfo(), self._call(messages, stop, kwargs)
        for event in BlockingTurns(self._connections.blocking(), self._sessions).events(call, info):
            final = event  # the Final comes last
        return self._result(final, info)

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        info, call = TurnInfo(), self._call(messages, stop, kwargs)
        async for event in AsyncTurns(self._connections.asyncio(), self._sessions).events(call, info):
            final = event
        return self._result(final, info)

    def _result(self, final: Event, info: TurnInfo) -> ChatResult:
        assert isinstance(final, Final), "the worker client raises for a stream without its Final"
        return ChatResult(generations=[ChatGeneration(message=convert.ai_message(final, self.model_name,
                                                                                 info.metadata()))])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        info, calls = TurnInfo(), []
        for event in BlockingTurns(self._connections.blocking(), self._sessions).events(
                self._call(messages, stop, kwargs), info):
            chunk = self._chunk(event, calls, info)
            if chunk is not None:
                if run_manager:
                    run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        info, calls = TurnInfo(), []
        async for event in AsyncTurns(self._connections.asyncio(), self._sessions).events(
                self._call(messages, stop, kwargs), info):
            chunk = self._chunk(event, calls, info)
            if chunk is not None:
                if run_manager:
                    await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk

    def _chunk(self, event: Event, calls: list[ToolCall], info: TurnInfo) -> ChatGenerationChunk | None:
        """A worker event as a chunk; None for a delta that released no text (a held-back or special token)."""
        if isinstance(event, Delta):
            return ChatGenerationChunk(message=convert.text_chunk(event.text, event.reasoning)) if event.text else None
        if isinstance(event, ToolCall):
            calls.append(event)
            return ChatGenerationChunk(message=convert.tool_call_chunk(event, len(calls) - 1))
        return ChatGenerationChunk(message=convert.last_chunk(event, self.model_name, info.metadata()),
                                   generation_info={"finish_reason": event.finish_reason or "stop"})

    # -- tools and structured output -----------------------------------------------------------------------------

    def bind_tools(self, tools: Sequence[dict[str, Any] | type | Callable | BaseTool], *,
                   tool_choice: str | bool | dict[str, Any] | None = None, strict: bool | None = None,
                   **kwargs: Any) -> Runnable[LanguageModelInput, AIMessage]:
        """`tool_choice`: "auto", "none", "any" / "required" / True (some call), or a tool's name (that call),
        enforced by constrained decoding; `strict` is accepted for LangChain's signature, calls always match their
        schemas."""
        specs = [convert_to_openai_tool(t) for t in tools]
        choice = convert.tool_choice(tool_choice, [convert.tool(s) for s in specs])  # refused now, not per call
        return super().bind(tools=specs, tool_choice=choice, **kwargs)

    def with_structured_output(self, schema: dict[str, Any] | type, *, method: Method = "json_schema",
                               include_raw: bool = False, strict: bool | None = None,
                               **kwargs: Any) -> Runnable[LanguageModelInput, dict[str, Any] | Any]:
        """The reply as `schema` (a pydantic class, a TypedDict, a JSON schema): `json_schema` constrains the
        content to it, `function_calling` forces one call of it as a tool, `json_mode` any JSON object."""
        if kwargs:
            raise TypeError(f"unexpected arguments {', '.join(sorted(kwargs))}")
        return structured_output(self, schema, method, include_raw)

    # -- threads and connections ---------------------------------------------------------------------------------

    def delete_thread(self, thread_id: str) -> int:
        """Forget a thread and delete its worker sessions; how many were deleted (one already gone is skipped)."""
        pool, deleted = self._connections.blocking(), 0
        for branch in self._sessions.drop_thread(thread_id):
            try:
                pool.connect(branch.session_id, hint=branch.address)[1].delete_session(branch.session_id)
                deleted += 1
            except NotFound:
                pass
        return deleted

    async def adelete_thread(self, thread_id: str) -> int:
        pool, deleted = self._connections.asyncio(), 0
        for branch in self._sessions.drop_thread(thread_id):
            try:
                await pool.connect(branch.session_id, hint=branch.address)[1].delete_session(branch.session_id)
                deleted += 1
            except NotFound:
                pass
        return deleted


    def close(self) -> None:
        """Close the blocking clients and the registry; the model makes no calls after."""
        self._connections.close()

    async def aclose(self) -> None:
        """Close the running event loop's asyncio clients."""
        await self._connections.aclose()

def _mode(effort: str | None) -> ReasoningMode | None:
    if effort is None:
        return None
    if effort not in convert.MODES:
        raise ValueError(f"reasoning_effort: one of {', '.join(convert.MODES)}, not {effort!r}")
    return convert.MODES[effort]  # type: ignore[return-value]
