"""A session's turn (turn.py) without a model: what the next turn feeds first (a lost state's replay, the owed
tokens, the closing of a turn left without a reply), what each commit point records (the renderer's state and what is
owed: the reply's unfed token and its EOS once it ends), and how a turn settles (a failed commit or a discarded state
drops the session from the hot tier)."""

from __future__ import annotations

from concurrent.futures import Future
from types import SimpleNamespace

import pytest

from foundation.chat import ChatSession, SessionHead, load_tokenizer
from foundation.chat.protocol import EOS_ID
from model_worker.engine import Finished
from model_worker.sampling import FinishReason
from model_worker.server import turn as turn_module
from model_worker.server.turn import SessionTurn
from model_worker.sessions import ChatState, OpenSession

HI = [{"role": "user", "content": "hi"}]


class FakeRuntime:
    """What a turn uses of the worker's runtime: the tokenizer, the commit writer, the hot tier."""

    def __init__(self, tokenizer, failing: BaseException | None = None) -> None:
        self.tokenizer, self.failing = tokenizer, failing
        self.written: list[tuple[list[int], ChatState | None]] = []
        self.discarded: list[tuple[str, str]] = []
        self.writer = SimpleNamespace(submit=self._submit)
        self.hot = SimpleNamespace(discard=lambda tenant, session_id: self.discarded.append((tenant, session_id)))
        self.store = None

    def _submit(self, prepared) -> Future:
        self.written.append(prepared)
        future: Future = Future()
        if self.failing:
            future.set_exception(self.failing)
        else:
            future.set_result(None)
        return future

    def check_length(self, tokens: int, max_tokens: int | None = None) -> None:
        pass


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(autouse=True)
def _prepare_records_the_commit(monkeypatch):
    """A commit prepared without a state: the tokens it commits and the chat state it carries."""
    monkeypatch.setattr(turn_module, "prepare", lambda store, session, tokens: (list(tokens), session.chat))


def session_of(chat: ChatSession, pending=(), replay=(), fed: int = 0) -> OpenSession:
    state = SimpleNamespace(num_tokens=fed)
    return OpenSession("acme", "s", state, list(chat.token_ids), None, chat.head,
                       chat=ChatState(chat.state(), tuple(pending)), replay=list(replay))


def test_the_next_turn_feeds_the_replay_and_the_owed_tokens_then_closes_a_turn_left_without_reply(tokenizer):
    chat = ChatSession(SessionHead(system_prompt="be brief"), tokenizer)
    answered = session_of(chat, pending=[5], replay=[1, 2])
    assert SessionTurn.open(FakeRuntime(tokenizer), answered).lead_in() == [1, 2, 5]
    chat.render_turn(HI, "non-think")  # its generation was cancelled: no reply
    unanswered = SessionTurn.open(FakeRuntime(tokenizer), session_of(chat, pending=[5]))
    assert unanswered.chat.awaiting_reply and unanswered.lead_in() == [5, EOS_ID]
    assert not unanswered.chat.awaiting_reply


def test_a_turn_on_new_messages_feeds_the_lead_in_then_the_rendered_turn(tokenizer):
    chat = ChatSession(SessionHead(), tokenizer)
    request = SimpleNamespace(WhichOneof=lambda _: "messages")
    turn = SessionTurn.with_input(FakeRuntime(tokenizer), session_of(chat, pending=[9]), request, "non-think",
                                  SimpleNamespace(messages=HI))
    rendered = ChatSession(SessionHead(), tokenizer).render_turn(HI, "non-think").token_ids
    assert turn.feed == [9, *rendered] and turn.new_tokens == len(rendered)


def test_a_reply_without_input_needs_a_turn_awaiting_it(tokenizer):
    chat = ChatSession(SessionHead(), tokenizer)
    with pytest.raises(ValueError, match="awaits no reply"):
        SessionTurn.reply(FakeRuntime(tokenizer), session_of(chat, pending=[3]))
    chat.render_turn(HI, "non-think")
    assert SessionTurn.reply(FakeRuntime(tokenizer), session_of(chat, pending=[3])).feed == [3]


def test_commit_points_carry_what_is_owed_and_the_end_of_a_reply_owes_its_unfed_token_and_eos(tokenizer):
    runtime, chat = FakeRuntime(tokenizer), ChatSession(SessionHead(), tokenizer)
    chat.render_turn(HI, "non-think")
    session = session_of(chat, fed=7)
    turn = SessionTurn(runtime, session, chat)
    output = SimpleNamespace(finished=False, token_ids=[10, 11, 12], start=5)
    request = SimpleNamespace(output=None, on_commit=None)
    turn.hook(request, owed=[4])
    request.on_commit([1, 2])  # the end of the input: before any output
    request.output = output
    request.on_commit([10])  # mid-output
    output.finished = True
    request.on_commit([11])  # the reply's end: 12 was sampled, never fed
    assert [(tokens, chat_state.pending) for tokens, chat_state in runtime.written] == [
        ([1, 2], (4,)), ([10], (4,)), ([11], (12, EOS_ID))]
    assert runtime.written[1][1].renderer["open_turn"] is not None  # awaiting the reply until it ends
    assert runtime.written[2][1].renderer == chat.state() and not chat.awaiting_reply
    turn.settle(Finished(FinishReason.STOP, None, [10, 11, 12], 2, 3, 7))
    assert runtime.discarded == []


def test_a_turn_of_raw_tokens_leaves_the_renderer_as_it_was(tokenizer):
    runtime, chat = FakeRuntime(tokenizer), ChatSession(SessionHead(), tokenizer)
    session = session_of(chat, pending=[1])
    SessionTurn(runtime, session, None).commit([8, 9], owed=[9])
    assert session.chat == ChatState(chat.state(), (9,))


def test_a_failed_commit_or_a_discarded_state_drops_the_session_from_the_hot_tier(tokenizer):
    chat = ChatSession(SessionHead(), tokenizer)
    failing = FakeRuntime(tokenizer, failing=OSError("store down"))
    turn = SessionTurn(failing, session_of(chat), chat)
    turn.commit([1])
    with pytest.raises(OSError, match="store down"):
        turn.settle(Finished(FinishReason.STOP, None, [], 1, 0, 1))
    assert failing.discarded == [("acme", "s")]
    runtime = FakeRuntime(tokenizer)
    turn = SessionTurn(runtime, session_of(chat), chat)
    turn.commit([1])
    turn.settle(Finished(FinishReason.ABORT, None, [], 1, 0, 1, discard_state=True))  # cancelled after feeding
    assert runtime.discarded == [("acme", "s")]
