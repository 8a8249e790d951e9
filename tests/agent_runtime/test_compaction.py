"""Context compaction: below the trigger nothing happens; above it the history is rebuilt in a new worker session
with old tool results cleared (or the older steps summarized), the agent session is pointed at it, and the
transcript keeps every row plus a note. Unit tests use a fake worker that renders appends with the worker's own chat
renderer (so a message list the worker would refuse fails here too); one test runs the loop on a real `tiny` worker."""

from __future__ import annotations

import pytest
from realparts import tiny_worker_in_process

from agent_runtime.compaction import ClearToolResults, Compaction, Compactor, Summarize
from agent_runtime.events import Compacted, ModeChosen, TurnDone
from agent_runtime.loop import AgentLoop, Limits
from agent_runtime.store.tables import ASSISTANT, SYSTEM_NOTE, TOOL_CALL, TOOL_RESULT, USER
from agent_runtime.store.transcript import Entry, TranscriptStore, upgrade
from agent_runtime.tools import ToolRegistry
from foundation.chat import ChatSession, SessionHead, load_tokenizer
from foundation.clients.worker import AlreadyExists, Final, ModelInfo, Sampling, SessionInfo, WorkerClient
from foundation.sql import make_engine, sessions

TOOLS = [{"type": "function", "function": {"name": "lookup", "description": "Look a thing up.",
                                           "parameters": {"type": "object", "properties": {"q": {"type": "integer"}}}}}]


class FakeWorker:
    """The worker's session calls the compactor makes. Sessions are the worker's chat renderer; sizes are its token
    counts; a summary request answers `summary`."""

    target = "fake"

    def __init__(self, max_context: int = 100_000, summary: str = "the user looked up things 1 to 3") -> None:
        self.tokenizer, self.max_context, self.summary = load_tokenizer(), max_context, summary
        self.chats: dict[str, ChatSession] = {}
        self.commits: dict[str, int] = {}
        self.appended: dict[str, list[dict]] = {}
        self.modes: list[str] = []
        self.summary_requests: list[str] = []
        self.model_info_calls = 0

    def model_info(self) -> ModelInfo:
        self.model_info_calls += 1
        return ModelInfo("fake", max_context=self.max_context)

    def create_session(self, *, system_prompt="", tools=None, think_max=False, session_id=None) -> SessionInfo:
        if session_id in self.chats:
            raise AlreadyExists(f"session {session_id} exists")
        schemas = tuple({"type": "function", "function": {"name": t.name, "description": t.description,
                                                          "parameters": t.parameters}} for t in tools or ())
        self.chats[session_id] = ChatSession(SessionHead(think_max, system_prompt or None, schemas), self.tokenizer)
        self.commits[session_id] = 0
        return self.get_session(session_id)

    def append(self, session_id, messages, *, mode=None, expected_commit=None) -> SessionInfo:
        assert expected_commit == self.commits[session_id]
        self.chats[session_id].render_turn(messages, mode)  # raises on what the worker would refuse
        self.appended[session_id], self.modes = list(messages), [*self.modes, mode]
        self.commits[session_id] += 1
        return self.get_session(session_id)

    def get_session(self, session_id) -> SessionInfo:
        chat = self.chats[session_id]
        return SessionInfo(session_id, len(chat.token_ids), self.commits[session_id], think_max=chat.head.think_max)

    def delete_session(self, session_id) -> None:
        del self.chats[session_id]

    def generate_text(self, *, messages, mode, sampling) -> tuple[Final, str]:
        assert mode == "non-think" and sampling.temperature == 0.0
        self.summary_requests.append(messages[0]["content"])
        return Final("stop", content=self.summary), self.summary


@pytest.fixture
def store(tmp_path):
    url = f"sqlite:///{tmp_path}/agent.db"
    upgrade(url)
    return TranscriptStore(sessions(make_engine(url)))


@pytest.fixture
def worker():
    return FakeWorker()


def a_session(store: TranscriptStore, worker: FakeWorker, steps: int, answer: bool = True) -> None:
    """Agent session s1 on worker session agent-s1: `steps` steps that each ask, reason, look up and get a long
    result back, then (with `answer`) one that answers."""
    worker.create_session(system_prompt="be brief", session_id="agent-s1")
    store.create("acme", "s1", "be brief", TOOLS, "agent-s1")
    for n in range(1, steps + 1):
        store.append_step("acme", "s1", [
            Entry(USER, f"question {n}"), Entry(ASSISTANT, f"looking {n} up", reasoning=f"thinking about {n}"),
            Entry(TOOL_CALL, tool_call_id=f"c{n}", tool_name="lookup", arguments={"q": n})],
            worker_session_id="agent-s1", worker_commit=n)
        store.finish_call("acme", "s1", f"c{n}", Entry(TOOL_RESULT, f"result {n}: " + "x" * 400))
    if answer:
        store.append_step("acme", "s1", [Entry(USER, "so?"), Entry(ASSISTANT, "all found")],
                          worker_session_id="agent-s1", worker_commit=steps + 1)


def rows(store: TranscriptStore) -> list[tuple]:
    return [(r.seq, r.kind, r.content) for r in store.page("acme", "s1", None, 10_000)]


def test_below_the_trigger_nothing_happens_and_the_default_trigger_is_a_share_of_the_context(store, worker):
    worker.max_context = 1000
    a_session(store, worker, steps=3)
    before = rows(store)
    compactor = Compactor(store, worker)
    assert compactor.maybe_compact("acme", store.get("acme", "s1"), 850) is None
    assert list(worker.chats) == ["agent-s1"] and rows(store) == before
    assert compactor.maybe_compact("acme", store.get("acme", "s1"), 851) is not None
    assert worker.model_info_calls == 1


def test_clearing_keeps_the_last_results_and_every_transcript_row(store, worker):
    a_session(store, worker, steps=4)
    before = rows(store)
    compactor = Compactor(store, worker, Compaction(ClearToolResults(keep_last=2), trigger_tokens=100))
    event = compactor.maybe_compact("acme", store.get("acme", "s1"), 5000)

    assert isinstance(event, Compacted) and event.policy == "clear_tool_results"
    assert event.worker_session_id == "agent-s1-c1" and event.tokens_before == 5000
    assert event.tokens_after == worker.get_session("agent-s1-c1").tokens
    messages = worker.appended["agent-s1-c1"]
    results = [m["content"] for m in messages if m["role"] == "tool"]
    assert results[:2] == ["[tool result cleared by compaction: 410 characters]"] * 2
    assert results[2:] == [f"result {n}: " + "x" * 400 for n in (3, 4)]
    assert [m["content"] for m in messages if m["role"] == "user"] == [*(f"question {n}" for n in range(1, 5)), "so?"]
    assistants = [m for m in messages if m["role"] == "assistant"]
    assert [m["content"] for m in assistants] == [*(f"looking {n} up" for n in range(1, 5)), "all found"]
    assert assistants[0]["tool_calls"] == [{"id": "c1", "type": "function",
                                            "function": {"name": "lookup", "arguments": {"q": 1}}}]
    assert not any("reasoning_content" in m for m in messages) and worker.modes == ["non-think"]
    assert messages[-1]["role"] == "developer" and "2 older tool results cleared" in messages[-1]["content"]
    # The new session has the agent's system prompt and tools; the agent session points at it.
    assert worker.chats["agent-s1-c1"].head == SessionHead(False, "be brief", tuple(TOOLS))
    session = store.get("acme", "s1")
    assert (session.worker_session_id, session.worker_commit, session.worker_address) == ("agent-s1-c1", 1, "fake")
    # Every row is still there, and a note says what happened.
    after = rows(store)
    assert after[:-1] == before and after[-1][1] == SYSTEM_NOTE
    note = store.page("acme", "s1", None, 1)[0].arguments
    assert note == {"compaction": 1, "id_base": "agent-s1", "policy": "clear_tool_results", "tokens_before": 5000,
                    "tokens_after": event.tokens_after, "worker_session_id": "agent-s1-c1",
                    "previous_worker_session_id": "agent-s1"}


def test_the_last_steps_results_are_left_to_the_loop(store, worker):
    """The loop gives the model the last step's results with the next step; the new session must not have them."""
    a_session(store, worker, steps=3, answer=False)
    compactor = Compactor(store, worker, Compaction(ClearToolResults(keep_last=1), trigger_tokens=100))
    compactor.maybe_compact("acme", store.get("acme", "s1"), 5000)
    messages = worker.appended["agent-s1-c1"]
    assert [m.get("tool_call_id") for m in messages if m["role"] == "tool"] == ["c1", "c2"]
    assert messages[-2]["tool_calls"][0]["id"] == "c3"
    assert messages[-4]["content"] == "result 2: " + "x" * 400  # the last one given to the model, kept
    # What the loop sends next renders on the new session.
    worker.chats["agent-s1-c1"].append_completion([])
    worker.chats["agent-s1-c1"].render_turn([{"role": "tool", "tool_call_id": "c3", "content": "r3"}], "non-think")


def test_summarize_keeps_the_last_steps_and_the_next_summary_starts_from_it(store, worker):
    with pytest.raises(ValueError):
        Summarize(keep_last_steps=0)
    a_session(store, worker, steps=4)
    compactor = Compactor(store, worker, Compaction(Summarize(keep_last_steps=2), trigger_tokens=100))
    event = compactor.maybe_compact("acme", store.get("acme", "s1"), 5000)

    assert event.policy == "summarize" and event.worker_session_id == "agent-s1-c1"
    (request,) = worker.summary_requests
    assert all(f"question {n}" in request for n in (1, 2, 3)) and "question 4" not in request
    assert "Assistant called lookup with {\"q\": 2}" in request and "result 3: " + "x" * 400 in request
    messages = worker.appended["agent-s1-c1"]
    assert messages[0] == {"role": "user", "content": "[Summary of the earlier conversation, written at "
                                                      "compaction]\nthe user looked up things 1 to 3"}
    # Step 4 (its input, its call and result) and the answer, verbatim.
    assert [m["role"] for m in messages[1:]] == ["user", "assistant", "tool", "user", "assistant", "developer"]
    assert messages[1]["content"] == "question 4" and messages[-2]["content"] == "all found"
    step4 = store.step_entries("acme", "s1", 4)
    assert store.page("acme", "s1", None, 1)[0].arguments["summary_before_seq"] == step4[0].seq

    # Two more steps, and a second compaction summarizes from the first summary on, not from the start.
    for n in (5, 6):
        store.append_step("acme", "s1", [Entry(USER, f"question {n}"), Entry(ASSISTANT, f"answer {n}")],
                          worker_session_id="agent-s1-c1", worker_commit=n)
    worker.summary = "all of it"
    event = compactor.maybe_compact("acme", store.get("acme", "s1"), 5000)
    assert event.worker_session_id == "agent-s1-c2"
    request = worker.summary_requests[-1]
    assert "the user looked up things 1 to 3" in request and "question 4" in request and "question 5" not in request
    assert "question 1" not in request
    assert [m["content"] for m in worker.appended["agent-s1-c2"] if m["role"] == "user"][1:] == [
        "question 5", "question 6"]


def test_a_taken_worker_session_id_is_skipped_never_deleted(store, worker):
    a_session(store, worker, steps=2)
    worker.create_session(session_id="agent-s1-c1")  # a compaction that died before the switch, or another's
    compactor = Compactor(store, worker, Compaction(ClearToolResults(keep_last=0), trigger_tokens=100))
    assert compactor.maybe_compact("acme", store.get("acme", "s1"), 5000).worker_session_id == "agent-s1-c2"
    assert worker.chats["agent-s1-c1"].head.tools == () and worker.chats["agent-s1-c2"].head.tools == tuple(TOOLS)
    # The next compaction of this agent session is numbered from the last one.
    store.append_step("acme", "s1", [Entry(USER, "more"), Entry(ASSISTANT, "sure")],
                      worker_session_id="agent-s1-c2", worker_commit=1)
    assert compactor.maybe_compact("acme", store.get("acme", "s1"), 5000).worker_session_id == "agent-s1-c3"


@pytest.fixture(scope="module")
def real_worker(tmp_path_factory):
    with tiny_worker_in_process(tmp_path_factory.mktemp("compaction-worker")) as worker:
        yield worker.address


def test_the_loop_compacts_on_a_real_worker_and_runs_on_the_new_session(real_worker, store):
    tools = ToolRegistry()

    @tools.tool()
    def pick(color: str) -> str:
        """Pick a color."""
        return f"picked {color}: " + " ".join(f"shade{i}" for i in range(150))

    tools.get("pick").parameters["properties"]["color"]["enum"] = ["red", "blue"]
    client = WorkerClient(real_worker, timeout=120)
    base = AgentLoop(store, client, tools).create_session("acme", "c1", system_prompt="use tools").worker_session_id
    head = client.get_session(base).tokens
    compactor = Compactor(store, client, Compaction(ClearToolResults(keep_last=0), trigger_tokens=head + 150))
    loop = AgentLoop(store, client, tools, compactor=compactor)
    sampling, one_step = Sampling(temperature=0.0, max_tokens=60), Limits(max_steps=1)

    # Two turns of one forced call each: the first result reaches the worker with the second turn.
    for text in ("pick one", "and another"):
        events = list(loop.run_turn("acme", "c1", [{"role": "user", "content": text}], sampling=sampling,
                                    first_tool_choice="pick", limits=one_step))
        assert not any(isinstance(e, Compacted) for e in events)
    before = client.get_session(base).tokens
    assert before > head + 150

    events = list(loop.run_turn("acme", "c1", [{"role": "user", "content": "thanks"}], sampling=sampling,
                                limits=one_step))
    compacted = next(e for e in events if isinstance(e, Compacted))
    assert events.index(compacted) < next(i for i, e in enumerate(events) if isinstance(e, ModeChosen))
    assert compacted.worker_session_id == f"{base}-c1" and compacted.tokens_before == before
    assert compacted.tokens_after < before
    assert isinstance(events[-1], TurnDone)
    # The third step ran on the new session, which the agent session now points at.
    session = store.get("acme", "c1")
    assert session.worker_session_id == f"{base}-c1" and session.steps == 3
    assert store.step_record("acme", "c1", 3).worker_session_id == f"{base}-c1"
    assert client.get_session(f"{base}-c1").tokens > compacted.tokens_after
    assert client.get_session(base).tokens == before  # left in place
    client.close()
