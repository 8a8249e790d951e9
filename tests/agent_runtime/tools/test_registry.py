"""The tool registry: every call, however malformed, ends in a result the model can read; timeouts, output limits,
concurrency with serial tools, idempotency keys."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from agent_runtime.tools import Tool, ToolCall, ToolRegistry


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def tools() -> ToolRegistry:
    registry = ToolRegistry()

    @registry.tool(timeout_s=2)
    def lookup(word: str, limit: int = 3) -> dict:
        """Look a word up."""
        return {"word": word, "senses": ["a", "b", "c", "d"][:limit]}

    @registry.tool(timeout_s=0.2)
    async def slow(seconds: float) -> str:
        """Sleep."""
        await asyncio.sleep(seconds)
        return "woke"

    @registry.tool(max_output_bytes=10)
    def chatty() -> str:
        """Talk."""
        return "é" * 20

    @registry.tool()
    def broken() -> str:
        """Fail."""
        raise RuntimeError("disk on fire")

    @registry.tool(idempotent=True)
    def charge(amount: int, idempotency_key: str) -> str:
        """Charge once."""
        return idempotency_key

    return registry


def content(result) -> object:
    return json.loads(result.content)


def test_calls_and_schemas(tools):
    result = run(tools.call(ToolCall("c1", "lookup", {"word": "cat", "limit": 2})))
    assert not result.is_error and content(result) == {"word": "cat", "senses": ["a", "b"]}
    schema = next(s for s in tools.schemas() if s["function"]["name"] == "lookup")["function"]
    assert schema["description"] == "Look a word up."
    assert schema["parameters"]["required"] == ["word"] and schema["parameters"]["additionalProperties"] is False
    assert "idempotency_key" not in next(s for s in tools.schemas()
                                         if s["function"]["name"] == "charge")["function"]["parameters"]["properties"]


@pytest.mark.parametrize("call, message", [
    (ToolCall("c", "nope", {}), "unknown tool 'nope'"),
    (ToolCall("c", "lookup", "cat"), "arguments must be a JSON object"),
    (ToolCall("c", "lookup", {}), "'word' is a required property"),
    (ToolCall("c", "lookup", {"word": 3}), "word: 3 is not of type 'string'"),
    (ToolCall("c", "lookup", {"word": "x", "extra": 1}), "Additional properties are not allowed"),
    (ToolCall("c", "slow", {"seconds": 5}), "timed out after 0.2 s"),
    (ToolCall("c", "broken", {}), "RuntimeError: disk on fire"),
])
def test_every_failure_is_a_result_for_the_model(tools, call, message):
    result = run(tools.call(call))
    assert result.is_error and message in content(result)["error"]


def test_outputs_are_cut_at_the_limit_on_a_character_boundary(tools):
    result = run(tools.call(ToolCall("c", "chatty", {})))
    assert result.truncated and result.content.startswith("é" * 5) and "output truncated: 40 bytes" in result.content


def test_calls_run_concurrently_except_serial_tools():
    registry, running, peak, order = ToolRegistry(), [0], [0], []
    lock = threading.Lock()

    def work(name: str) -> str:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.2)
        with lock:
            running[0] -= 1
            order.append(name)
        return name

    params = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    registry.add(Tool("parallel", "", params, work))
    registry.add(Tool("alone", "", params, work, serial=True))
    calls = [ToolCall(str(i), "alone" if i in (1, 3) else "parallel", {"name": str(i)}) for i in range(5)]
    results = run(registry.run_calls(calls))
    assert [r.call_id for r in results] == ["0", "1", "2", "3", "4"]  # in call order
    assert peak[0] == 3 and order[-2:] == ["1", "3"]  # the three parallel ones together, then each serial alone


def test_each_result_is_handed_over_as_its_call_ends_while_the_others_still_run():
    registry, release, handed = ToolRegistry(), threading.Event(), []
    params = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    registry.add(Tool("quick", "", params, lambda name: name))
    registry.add(Tool("blocked", "", params, lambda name: name if release.wait(10) else "never released"))
    registry.add(Tool("alone", "", params, lambda name: name, serial=True))

    async def on_result(index, result):
        handed.append((index, result.content))
        if result.content == "q":  # the blocked call still runs: this hand-over is what lets it end
            release.set()

    calls = [ToolCall("a", "blocked", {"name": "b"}), ToolCall("s", "alone", {"name": "s"}),
             ToolCall("q", "quick", {"name": "q"})]
    results = run(registry.run_calls(calls, on_result=on_result))
    assert [r.content for r in results] == ["b", "s", "q"]  # in call order
    assert handed == [(2, "q"), (0, "b"), (1, "s")]  # as each ended; the serial one after the others


def test_idempotency_keys_reach_the_tools_that_ask(tools):
    assert run(tools.call(ToolCall("c9", "charge", {"amount": 5}), idempotency_key="turn-4/c9")).content == \
        "turn-4/c9"
    assert run(tools.call(ToolCall("c9", "charge", {"amount": 5}))).content == "c9"


def test_registration_is_checked():
    registry = ToolRegistry()
    registry.add(Tool("a", "", {"type": "object"}, lambda: 1))
    with pytest.raises(ValueError, match="already registered"):
        registry.add(Tool("a", "", {"type": "object"}, lambda: 1))
    with pytest.raises(ValueError, match="object schema"):
        registry.add(Tool("b", "", {"type": "array"}, lambda: 1))
    with pytest.raises(Exception, match="is not valid"):
        registry.add(Tool("c", "", {"type": "object", "properties": {"x": {"type": "nonsense"}}}, lambda: 1))


def test_a_sessions_subset_and_tools_that_need_approval(tools):
    subset = tools.only(["lookup"])
    assert [t.name for t in subset.all()] == ["lookup"] and tools.get("charge") is not None
    with pytest.raises(ValueError, match="no such tools: rm"):
        tools.only(["lookup", "rm"])
    tools.require_approval(["charge"])
    assert tools.get("charge").requires_approval and not tools.get("lookup").requires_approval
    with pytest.raises(ValueError, match="no such tools: rm"):
        tools.require_approval(["rm"])
