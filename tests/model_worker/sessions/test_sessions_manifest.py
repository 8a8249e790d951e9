"""The commit record's typed parts (manifest.py): the head is the chat package's `SessionHead`, and the chat state a
`ChatState`; records stored before either was typed (the head as a plain object, the chat as a dict) open, and
write back exactly what they held; a chat state of the wrong shape is a malformed record."""

from __future__ import annotations

import json

import pytest

from foundation.chat import ChatSession, SessionHead
from model_worker.sessions import ChatState, Head
from model_worker.sessions.codec import BlobCodec
from model_worker.sessions.errors import CorruptSession
from model_worker.sessions.manifest import FORMAT, Commit, head_record, pack_tokens

TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


def stored_record(head: dict, chat: object) -> dict:
    """A record as the store wrote it before the head and the chat state were typed."""
    return {"format": FORMAT, "session_id": "s", "seq": 4, "fingerprint": "f", "layout": "l", "num_tokens": 3,
            "token_pages": 0, "last_token_page": None, "partial_tokens": pack_tokens([1, 2, 3]), "tail": "t",
            "head": head, "created_at": 1.5, "parent": None, "checkpoint": False, "sampling": None, "chat": chat}


PLAIN_HEAD = {"think_max": False, "system_prompt": None, "tools": None, "response_format": None, "head_tokens": 0}
TOOLS_HEAD = {"think_max": True, "system_prompt": "be brief", "tools": [TOOL],
              "response_format": {"type": "object"}, "head_tokens": 12}
RENDERER = ChatSession(SessionHead()).state()


@pytest.mark.parametrize("head", [PLAIN_HEAD, TOOLS_HEAD])
@pytest.mark.parametrize("chat", [None, {"renderer": RENDERER, "pending": [7, 1]}, {"renderer": None, "pending": []}])
def test_a_record_stored_untyped_opens_typed_and_writes_the_same_bytes(head, chat):
    codec = BlobCodec()
    stored = codec.seal_json("k", stored_record(head, chat))
    commit = Commit.from_record(codec.open_json("k", stored))
    assert type(commit.head) is SessionHead and commit.head.tools == tuple(head["tools"] or ())
    assert commit.chat is None if chat is None else commit.chat == ChatState(chat["renderer"], tuple(chat["pending"]))
    assert codec.open_json("k", codec.seal_json("k", commit.to_record())) == json.loads(json.dumps(
        stored_record(head, chat)))


def test_a_chat_state_missing_a_key_opens_with_its_default():
    commit = Commit.from_record(stored_record(PLAIN_HEAD, {"renderer": RENDERER}))
    assert commit.chat == ChatState(RENDERER, ())
    assert Commit.from_record(stored_record(PLAIN_HEAD, {})).chat == ChatState()


@pytest.mark.parametrize("chat", ["renderer", [1], {"renderer": "state"}, {"pending": "12"}, {"pending": [1, True]},
                                  {"pending": [1.0]}, {"pending": None}])
def test_a_chat_state_of_the_wrong_shape_is_a_malformed_record(chat):
    with pytest.raises(CorruptSession, match="malformed commit record"):
        Commit.from_record(stored_record(PLAIN_HEAD, chat))


def test_one_head_type_for_the_store_and_the_renderer():
    assert Head is SessionHead
    head = SessionHead(tools=[TOOL])
    assert head.tools == (TOOL,) and SessionHead(tools=None).tools == () == SessionHead().tools
    assert head_record(SessionHead())["tools"] is None  # as records said before: no tools is null
    assert ChatSession(head).head is head  # the renderer takes the stored head itself
