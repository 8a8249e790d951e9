"""A turn on a session, end to end: what it feeds, what it leaves owed, where it commits and how it settles.

Beside its tokens, each commit of a session keeps a `ChatState`: the chat renderer's state (a turn of raw token ids
bypasses the renderer and leaves it as it was) and the tokens the model is owed, which the next turn feeds first: the
last sampled token of a reply (the engine never feeds it) with the reply's closing EOS, or the last token an
AppendSession held back (a Generate without input then samples the reply from it). A turn runs on three threads:

1. It opens on the request's thread, with the session pinned (`WorkerRuntime.exclusive`): the renderer as the last
   commit left it; the tokens to feed are a lost state's replay, the owed tokens, the closing of a turn left without
   a reply (its generation was cancelled), then the new input (`SessionTurn.with_input`; `SessionTurn.reply` for a
   Generate without input).
2. It commits at each commit point the engine reports, on the engine thread (`SessionTurn.hook`: the end of the
   input, every `commit_every` fed tokens, the end of the output). A commit carries the renderer's state and what is
   owed at that point (nothing until the reply ends); it is prepared there, without storage I/O, and written in order
   by the commit writer's thread.
3. It settles on the request's thread once the engine's `Finished` arrives (`SessionTurn.settle`): the reply is final
   only once its commits are written. A commit that failed (byte cap, store down) leaves the session in memory ahead
   of the store, and a discarded state (cancelled after feeding, failed) holds uncommitted tokens: either way the
   session leaves the hot tier, so the next request reopens its last written commit. What was written stays.
"""

from __future__ import annotations

import queue
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import Any

from foundation import wire
from foundation.chat import ChatMode, ChatSession, SessionHead, Tokenizer
from model_worker.engine import Finished, Request
from model_worker.sampling import SamplingParams
from model_worker.server.runtime import CommitMismatch, WorkerRuntime
from model_worker.sessions import ChatState, OpenSession
from model_worker.sessions.commits import prepare


def chat_renderer(tokenizer: Tokenizer, head: SessionHead, state: Mapping[str, Any] | None,
                  token_ids: Sequence[int]) -> ChatSession:
    """The chat renderer of a session with `head`: fresh, or as a commit's renderer `state` left it over `token_ids`."""
    if state is None:
        return ChatSession(head, tokenizer)
    return ChatSession.resume(head, state, token_ids, tokenizer)


def request_token_ids(runtime: WorkerRuntime, request, history: int) -> list[int]:
    """A request's raw token ids, after `history` tokens already in the sequence."""
    ids = request.token_ids.ids
    runtime.check_length(history + len(ids))  # before copying them: the count alone may be far too many
    return list(ids)


def check_expected_commit(session: OpenSession, request) -> None:
    """A request that names the commit it continues runs only on that commit (a retried turn already ran)."""
    if request.HasField("expected_commit") and request.expected_commit != session.seq:
        raise CommitMismatch(f"session {session.session_id} is at commit {session.seq}, not {request.expected_commit}")


class SessionTurn:
    """One turn on a pinned session: open it (`with_input`, `reply`), run its `feed` through the engine with `hook`
    set on the engine request (or `prefill` it), then `settle`."""

    def __init__(self, runtime: WorkerRuntime, session: OpenSession, chat: ChatSession | None) -> None:
        self.runtime, self.session, self.chat = runtime, session, chat
        self.feed: list[int] = []  # for the engine: replay, owed tokens, an unanswered turn's closing, new input
        self.new_tokens = 0  # how many of `feed` are the new input's
        self.commits: list[Future] = []  # being written, in order; `settle` waits for them

    # -- opening (the request's thread) --------------------------------------------------------------------------

    @classmethod
    def open(cls, runtime: WorkerRuntime, session: OpenSession, raw: bool = False) -> SessionTurn:
        """A turn on the session's renderer as its last commit left it; `raw`: one fed raw token ids, without it."""
        chat = None
        if not raw:
            state = session.chat.renderer if session.chat is not None else None
            chat = chat_renderer(runtime.tokenizer, session.head, state, session.token_ids)
        return cls(runtime, session, chat)

    @classmethod
    def reply(cls, runtime: WorkerRuntime, session: OpenSession) -> SessionTurn:
        """The reply to what AppendSession put in: only the owed tokens are fed (the last of them its held-back
        token), and the reply is sampled from there."""
        turn = cls.open(runtime, session)
        if not turn.chat.awaiting_reply:
            raise ValueError("input: the session awaits no reply; give messages or token_ids")
        turn.feed = turn.owed()
        return turn

    @classmethod
    def with_input(cls, runtime: WorkerRuntime, session: OpenSession, request, mode: ChatMode,
                   inputs: wire.ChatInput) -> SessionTurn:
        """A turn on a Generate's or an Append's input: new messages rendered on the session's chat, or raw token
        ids; what the session would then hold must leave room in the model's context."""
        raw = request.WhichOneof("input") == "token_ids"
        history = len(session.token_ids)
        new = request_token_ids(runtime, request, history) if raw else []
        turn = cls.open(runtime, session, raw=raw)
        lead_in = turn.lead_in()
        if turn.chat is not None:
            new = turn.chat.render_turn(inputs.messages or [], mode).token_ids
        runtime.check_length(history + len(lead_in) + len(new))
        turn.feed, turn.new_tokens = lead_in + new, len(new)
        return turn

    def reuse_computed_prefix(self) -> None:
        """On a session whose only commit is its creation (its first turn: a Responses call without
        `previous_response_id`, a new agent session), start from the longest prefix of everything it will hold that
        its tenant computed lately (the prefix cache), so that only the rest is fed."""
        session = self.session
        if session.seq == 0 and not session.replay and self.feed:
            tokens = session.token_ids + self.feed
            self.feed = tokens[self.runtime.prefixes.advance_session(session, tokens) :]

    def owed(self) -> list[int]:
        """Tokens the session owes the model: a lost state's replay, then those its last commit left owed."""
        pending = self.session.chat.pending if self.session.chat is not None else ()
        return self.session.replay + list(pending)

    def lead_in(self) -> list[int]:
        """What goes before a new turn's tokens: the owed tokens and, when the last turn got no reply (its
        generation was cancelled), the closing of an empty one."""
        owed = self.owed()
        if self.chat is not None and self.chat.awaiting_reply:
            owed += self.chat.append_completion([]).token_ids
        return owed

    # -- commit points (the engine thread) -----------------------------------------------------------------------

    def hook(self, request: Request, owed: Sequence[int] = ()) -> None:
        """Commit at each of the engine request's commit points, with `owed` owed until its reply ends, and then
        what the reply leaves owed."""
        def on_commit(tokens: list[int]) -> None:
            output = request.output
            self.commit(tokens, self._reply_owed(output) if output is not None and output.finished else owed)

        request.on_commit = on_commit

    def _reply_owed(self, output) -> list[int]:
        """At the end of a reply (its kept tokens): the tokens never fed (the last one) and its closing EOS. The
        renderer records the reply here, so the commit carries the renderer's state after it."""
        closing = self.chat.append_completion(output.token_ids).token_ids if self.chat is not None else []
        return output.token_ids[self.session.state.num_tokens - output.start :] + closing

    def commit(self, token_ids: Sequence[int], owed: Sequence[int] = ()) -> None:
        """Commit `token_ids` (fed since the last commit) with the renderer's state and `owed`: prepared here (no
        storage I/O), written by the commit writer."""
        session = self.session
        kept = session.chat.renderer if session.chat is not None else None  # raw tokens leave the renderer as it was
        session.chat = ChatState(self.chat.state() if self.chat is not None else kept, tuple(owed))
        self.commits.append(self.runtime.writer.submit(prepare(self.runtime.store, session, token_ids)))

    # -- the end (the request's thread) --------------------------------------------------------------------------

    def settle(self, final: Finished | None = None) -> None:
        """Wait until the turn's commits are written; one that failed is raised. A failed commit, or a state the
        engine discarded, drops the session from the hot tier (the next request reopens the last written commit)."""
        session = self.session
        try:
            for commit in self.commits:
                commit.result()
        except BaseException:
            self.runtime.hot.discard(session.tenant, session.session_id)
            raise
        if final is not None and (final.discard_state or final.error):
            self.runtime.hot.discard(session.tenant, session.session_id)

    def prefill(self, token_ids: Sequence[int], owed: Sequence[int] = ()) -> None:
        """Feed `token_ids` to the session through the scheduler (no sampling), commit them with `owed` owed after,
        and settle; a feed that failed or was cancelled after it began raises."""
        if not token_ids:
            self.commit([], owed)
            self.settle()
            return
        done: queue.Queue = queue.Queue()
        request = Request(uuid.uuid4().hex, self.session.state, list(token_ids), SamplingParams(temperature=0.0),
                          done.put, prefill_only=True, tenant=self.session.tenant)
        self.hook(request, owed)
        self.runtime.submit(request)  # at the tenant's token rate
        while not isinstance(finished := done.get(), Finished):
            pass
        self.settle(finished)
        if finished.discard_state or finished.error:
            raise finished.failure() or RuntimeError("the append was cancelled")
