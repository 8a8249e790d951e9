"""ChatDeepSeekV4's offline parts: which session a thread's call runs on (ThreadSessions: continue, fork at the
longest matching commit, create, and the fallbacks when the worker refuses a start), and the message conversion
the comparison relies on (a reply compares equal whichever way LangChain hands it back)."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

from foundation.clients.worker import FailedPrecondition, Final, Message, NotFound, Tool, ToolCall, Usage
from integrations.langchain import ChatDeepSeekV4, UnsupportedContent, convert
from integrations.langchain.sessions import Head, ThreadSessions

HEAD = Head("be brief", [Tool("weather", "", {"type": "object"})])


def user(text: str) -> Message:
    return Message("user", text)


def reply(text: str) -> Message:
    return Message("assistant", text)


def run(sessions: ThreadSessions, history: list[Message], answer: str, session_id: str, commit: int) -> str:
    """One call on the thread `t`: plan it, start a session when asked, record the reply; returns the action."""
    plan = sessions.plan("t", HEAD, history)
    if plan.action != "continue":
        sessions.started(plan, session_id, "w:1", plan.commit or 0)
    sessions.finished(plan, reply(answer), commit, "w:1")
    return plan.action


def test_a_history_that_extends_the_session_continues_it_and_one_that_leaves_it_forks():
    sessions = ThreadSessions()
    h1 = [user("a")]
    assert run(sessions, h1, "A", "s1", 2) == "create"
    h2 = [*h1, reply("A"), user("b")]
    plan = sessions.plan("t", HEAD, h2)
    assert (plan.action, plan.new_messages, plan.expected_commit) == ("continue", [user("b")], 2)
    sessions.finished(plan, reply("B"), 4, "w:1")
    # Edited: the second question differs, so the session forks at the commit holding [a, A].
    plan = sessions.plan("t", HEAD, [*h1, reply("A"), user("b, edited")])
    assert (plan.action, plan.branch.session_id, plan.commit, plan.new_messages) == (
        "fork", "s1", 2, [user("b, edited")])
    # Regenerated: the last reply dropped, the same fork point.
    assert sessions.plan("t", HEAD, h2).commit == 2
    # Nothing shared past the head: a new session.
    assert sessions.plan("t", HEAD, [user("z")]).action == "create"
    # Another head (other tools, a structured output's schema) on the same thread: sessions of its own.
    assert sessions.plan("t", Head("be brief"), [*h2, reply("B"), user("c")]).action == "create"


def test_a_busy_session_is_forked_rather_than_shared():
    sessions = ThreadSessions()
    run(sessions, [user("a")], "A", "s1", 2)
    history = [user("a"), reply("A"), user("b")]
    running = sessions.plan("t", HEAD, history)
    assert running.action == "continue"
    concurrent = sessions.plan("t", HEAD, history)
    assert (concurrent.action, concurrent.commit) == ("fork", 2)
    sessions.release(running)
    assert sessions.plan("t", HEAD, history).action == "continue"


def test_refused_starts_fall_back_from_continue_to_fork_to_create():
    sessions = ThreadSessions()
    run(sessions, [user("a")], "A", "s1", 2)
    history = [user("a"), reply("A"), user("b")]
    plan = sessions.plan("t", HEAD, history)
    moved = sessions.fallback(plan, FailedPrecondition("at commit 3"), session_gone=False)
    assert (moved.action, moved.commit, moved.base) == ("fork", 2, 2)
    gone = sessions.fallback(moved, NotFound("no session s1"), session_gone=True)
    assert gone.action == "create" and gone.new_messages == history
    assert sessions.plan("t", HEAD, history).action == "create"  # the lost branch is forgotten
    with pytest.raises(NotFound):
        sessions.fallback(gone, NotFound("again"), session_gone=True)


def test_a_pruned_commit_drops_only_that_fork_point():
    sessions = ThreadSessions()
    run(sessions, [user("a")], "A", "s1", 2)
    run(sessions, [user("a"), reply("A"), user("b")], "B", "s1", 4)
    plan = sessions.plan("t", HEAD, [user("a"), reply("A"), user("edited")])
    assert plan.commit == 2
    sessions.fallback(plan, NotFound("commit 2 pruned"), session_gone=True)
    assert sessions.plan("t", HEAD, [user("a"), reply("A"), reply("B"), user("c")]).action == "create"
    assert sessions.plan("t", HEAD, [user("a"), reply("A"), user("b"), reply("B"), user("c")]).action == "continue"


def test_threads_and_branches_are_bounded():
    sessions = ThreadSessions(max_threads=2, max_branches=2)
    for thread in ("t1", "t2", "t3"):
        plan = sessions.plan(thread, HEAD, [user("a")])
        sessions.started(plan, thread, "w:1", 0)
        sessions.finished(plan, reply("A"), 2, "w:1")
    assert [b.session_id for b in sessions.drop_thread("t1")] == []  # the least recently used thread went
    assert [b.session_id for b in sessions.drop_thread("t3")] == ["t3"]


def test_a_reply_compares_equal_however_langchain_hands_it_back():
    final = Final("tool_calls", usage=Usage(prompt_tokens=3), content="ok", reasoning_content="hmm",
                  tool_calls=[ToolCall("call_1", "weather", {"city": "Lima"})])
    recorded = convert.reply_message(final)
    invoked = convert.ai_message(final, "tiny", {"session_id": "s1"})
    invoked.name = "agent"  # LangGraph names an agent's replies after the fact
    v1 = AIMessage(content=invoked.content_blocks, tool_calls=invoked.tool_calls,
                   response_metadata={"output_version": "v1"})
    streamed = convert.text_chunk("hm", True) + convert.text_chunk("m", True) + convert.text_chunk("ok", False) + \
        convert.tool_call_chunk(final.tool_calls[0], 0) + convert.last_chunk(final, "tiny", {})
    for message in (invoked, v1, streamed):
        assert convert.to_worker(message) == recorded


def test_conversion_refuses_what_the_model_cannot_read():
    history = convert.conversation([SystemMessage("one"), SystemMessage("two"), HumanMessage("hi", name="ann"),
                                    ToolMessage("3", tool_call_id="c1", name="add")])
    assert history.system_prompt == "one\n\ntwo" and history.fits_a_session
    assert history.messages == [Message("user", "hi", name="ann"), Message("tool", "3", tool_call_id="c1",
                                                                            name="add")]
    assert not convert.conversation([HumanMessage("hi"), SystemMessage("late")]).fits_a_session
    image = HumanMessage([{"type": "image", "url": "https://example.com/cat.png"}])
    with pytest.raises(UnsupportedContent, match="'image' block"):
        convert.conversation([image])
    tools = list(HEAD.tools)
    assert convert.tool_choice("any", tools) == "required" and convert.tool_choice(
        {"type": "function", "function": {"name": "weather"}}, tools) == "weather"
    with pytest.raises(ValueError, match="not among the tools"):
        convert.tool_choice("lookup", tools)


def test_the_model_refuses_arguments_it_would_drop():
    model = ChatDeepSeekV4(target="127.0.0.1:1")
    with pytest.raises(TypeError, match="unexpected arguments model"):
        model.invoke("hi", model="other")
    with pytest.raises(ValueError, match="reasoning_effort"):
        ChatDeepSeekV4(reasoning_effort="extreme")
    with pytest.raises(ValueError, match="not both"):
        ChatDeepSeekV4(reasoning_effort="high", reasoning_mode="think-high")
