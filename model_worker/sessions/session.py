"""The open session, in a module of its own: the store (store.py) opens it and the commit halves (commits.py)
advance it to its next commit, and both import it from here rather than one from the other."""

from __future__ import annotations

from dataclasses import dataclass, field

from foundation.chat import SessionHead
from model_worker.sessions.chain import Chain
from model_worker.sessions.manifest import ChatState
from model_worker.state import SequenceState


@dataclass
class OpenSession:
    """A session open in this process: the engine state at its last commit and what the next commit needs."""

    tenant: str
    session_id: str
    state: SequenceState
    token_ids: list[int]  # tokens committed so far
    chain: Chain
    head: SessionHead
    seq: int = -1  # the last commit's sequence number (-1: none yet)
    stored_pages: dict[int, int] = field(default_factory=dict)  # ratio -> full page groups stored
    token_pages: int = 0
    last_token_page: str | None = None
    sampling: bytes | None = None
    chat: ChatState | None = None  # the chat renderer's state and the owed tokens, stored with each commit
    rebuilt: bool = False  # the stored state was lost: the session starts empty and `replay` must be prefilled
    replay: list[int] = field(default_factory=list)  # the lost state's token log, to prefill and commit again
    repair: bool = False  # opened past an unfinished commit: the next one rewrites values it may find damaged
    reused_prefix_tokens: int = 0  # tokens whose state came from another session's stored prefix
