"""LangGraph on ChatDeepSeekV4 against a real model worker process (`tiny`, random weights): a ReAct agent's steps run
on one worker session per thread and prefill only their new messages (the worker's usage counters say so, never a
clock); a history that leaves the session (time travel, an edited message) forks it at the longest matching commit;
a session the worker lost, or one another request moved on, is replaced rather than failing the call. Structured
output on bounded schemas, and the README's LangChain section, run here too."""

from __future__ import annotations

import re
from contextlib import redirect_stdout
from io import StringIO
from typing import Literal

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.prebuilt import create_react_agent
from pydantic import BaseModel, Field
from realparts import ROOT

from foundation.clients.worker import Message, WorkerClient
from integrations.langchain import ChatDeepSeekV4

pytestmark = [pytest.mark.integration,
              # langchain.agents.create_agent is its successor, in the `langchain` package this extra does not need
              pytest.mark.filterwarnings("ignore:create_react_agent has been moved")]

# What a continued turn feeds beyond its new messages: the last token of the previous reply (sampled, never fed)
# and the reply's closing EOS (foundation/chat: the session owes them to the model).
OWED_TOKENS = 2


@tool
def weather(city: Literal["Lima", "Paris"]) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def forced_steps(model: ChatDeepSeekV4):
    """Random weights choose no tool themselves: a user message is answered by a call of `weather` (room for the
    whole call), a tool result by a little text (LangGraph's dynamic model, resolved per step; the tools, so the
    session's head, stay the same)."""
    def model_for(state, runtime):
        if isinstance(state["messages"][-1], HumanMessage):
            return model.bind_tools([weather], tool_choice="weather", max_tokens=48)
        return model.bind_tools([weather], tool_choice="none", max_tokens=8)
    return model_for


def assert_only_new_tokens(before: AIMessage, after: AIMessage) -> None:
    """`after` continued the session `before` left: its whole history was reused, only its new input prefilled."""
    previous, usage = before.response_metadata["worker_usage"], after.response_metadata["worker_usage"]
    assert after.response_metadata["session_start"] == "continued"
    assert after.response_metadata["session_id"] == before.response_metadata["session_id"]
    assert usage["reused_tokens"] == previous["session_tokens"] > usage["prefilled_tokens"]
    assert 0 < usage["prompt_tokens"] <= usage["prefilled_tokens"] <= usage["prompt_tokens"] + OWED_TOKENS
    assert after.usage_metadata["input_token_details"]["cache_read"] == usage["reused_tokens"]


@pytest.fixture
def model(worker_target: str) -> ChatDeepSeekV4:
    return ChatDeepSeekV4(target=worker_target, temperature=0.0, max_tokens=8)


def test_a_react_agent_runs_every_step_on_the_threads_session(model):
    agent = create_react_agent(forced_steps(model), [weather], checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "react"}}
    first = agent.invoke({"messages": [("user", "Weather in Lima?")]}, config)["messages"]
    assert [type(m) for m in first] == [HumanMessage, AIMessage, ToolMessage, AIMessage]
    call, result, answer = first[1:]
    assert call.tool_calls[0]["name"] == "weather" and call.tool_calls[0]["args"]["city"] in ("Lima", "Paris")
    assert result.content == f"sunny in {call.tool_calls[0]['args']['city']}"
    assert call.response_metadata["session_start"] == "created"
    assert_only_new_tokens(call, answer)  # the graph's second step paid for the tool result only

    second = agent.invoke({"messages": [("user", "And in Paris?")]}, config)["messages"]
    assert len(second) == 8 and second[:4] == first
    assert_only_new_tokens(answer, second[5])  # the next turn: the new question only
    assert_only_new_tokens(second[5], second[7])
    assert model.delete_thread("react") == 1
    assert model.delete_thread("react") == 0


def test_time_travel_and_an_edited_message_fork_the_session(model, worker_target):
    agent = create_react_agent(forced_steps(model), [weather], checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "travel"}}
    first = agent.invoke({"messages": [("user", "Weather in Lima?")]}, config)["messages"]
    session, call = first[-1].response_metadata["session_id"], first[1]
    before_answer = next(s for s in agent.get_state_history(config)
                         if s.next == ("agent",) and isinstance(s.values["messages"][-1], ToolMessage))

    # Replayed from before the answer: the history stops inside the session's, which forks after the call.
    replayed = agent.invoke(None, before_answer.config)["messages"][-1]
    metadata, usage = replayed.response_metadata, replayed.response_metadata["worker_usage"]
    assert metadata["session_start"] == "forked" and metadata["session_id"] != session
    assert usage["reused_tokens"] == call.response_metadata["worker_usage"]["session_tokens"]
    assert usage["prefilled_tokens"] <= usage["prompt_tokens"] + OWED_TOKENS

    # The tool result edited: forked at the same commit, the edited result is what the session holds next.
    result = before_answer.values["messages"][-1]
    edited = ToolMessage("rainy in Lima", tool_call_id=result.tool_call_id, name="weather", id=result.id)
    edited_config = agent.update_state(before_answer.config, {"messages": [edited]}, as_node="tools")
    answer = agent.invoke(None, edited_config)["messages"][-1]
    assert answer.response_metadata["session_start"] == "forked"
    assert answer.response_metadata["session_id"] not in (session, metadata["session_id"])
    assert answer.response_metadata["worker_usage"]["reused_tokens"] == usage["reused_tokens"]
    with WorkerClient(worker_target) as client:  # the original session is untouched by either branch
        assert client.get_session(session).tokens == first[-1].response_metadata["worker_usage"]["session_tokens"]


def test_a_session_lost_or_moved_on_is_replaced_not_an_error(model, worker_target):
    config = {"configurable": {"thread_id": "replaced"}}
    history = [HumanMessage("hi")]
    history += [model.invoke(history, config), HumanMessage("again")]
    session = history[1].response_metadata["session_id"]
    with WorkerClient(worker_target) as client:
        client.append(session, [Message("user", "another client's turn")])  # the session moves past our commit
        moved = model.invoke(history, config)
        assert moved.response_metadata["session_start"] == "forked"  # at the commit this thread recorded
        assert moved.response_metadata["worker_usage"]["reused_tokens"] > 0
        client.delete_session(moved.response_metadata["session_id"])  # gone (expired, deleted)
    history += [moved, HumanMessage("and again")]
    rebuilt = model.invoke(history, config)
    assert rebuilt.response_metadata["session_start"] == "created"
    history += [rebuilt, HumanMessage("once more")]
    assert_only_new_tokens(rebuilt, model.invoke(history, config))


async def test_an_async_agent_continues_its_session_and_streams(model):
    agent = create_react_agent(forced_steps(model), [weather], checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "async"}}
    first = (await agent.ainvoke({"messages": [("user", "Weather in Paris?")]}, config))["messages"]
    assert_only_new_tokens(first[1], first[3])
    streamed = [chunk async for chunk, _ in agent.astream({"messages": [("user", "And Lima?")]}, config,
                                                          stream_mode="messages") if isinstance(chunk, AIMessage)]
    assert any(chunk.tool_call_chunks for chunk in streamed)  # the call, streamed as it completed
    last = (await agent.aget_state(config)).values["messages"]
    assert_only_new_tokens(first[3], last[5])
    assert_only_new_tokens(last[5], last[7])


class Trip(BaseModel):
    city: Literal["Lima", "Paris"]
    days: int = Field(ge=1, le=9)


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_structured_output_on_bounded_values_parses(model, method):
    """Values that end (an enum, a bounded integer): the grammar closes them within a few tokens."""
    model = model.model_copy(update={"max_tokens": 64})  # a call of two parameters: ~50 tokens of DSML
    assert isinstance(model.with_structured_output(Trip, method=method).invoke("Plan a trip."), Trip)
    raw = model.with_structured_output(Trip.model_json_schema(), method=method, include_raw=True).invoke("Again.")
    assert raw["parsing_error"] is None and set(raw["parsed"]) == {"city", "days"}
    assert isinstance(raw["raw"], AIMessage)


def test_the_readme_langchain_section_runs(worker_target):
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## LangChain / LangGraph"):]
    section = section[:section.index("\n## ", 1)]
    code = "\n".join(re.findall(r"```python\n(.*?)```", section, re.S))
    assert "127.0.0.1:50051" in code
    out = StringIO()
    with redirect_stdout(out):
        # dont_inherit: the block runs as a reader would paste it, without this module's `from __future__` imports.
        exec(compile(code.replace("127.0.0.1:50051", worker_target), "README.md", "exec", dont_inherit=True),
             {"__name__": "readme"})
    printed = out.getvalue()
    reused, prefilled = map(int, re.search(r"(\d+) tokens of history reused, (\d+) prefilled", printed).groups())
    assert reused > prefilled > 0
    assert "city=" in printed and "'name': 'weather'" in printed  # the Trip, and the forced call
    assert "forked {" in printed
