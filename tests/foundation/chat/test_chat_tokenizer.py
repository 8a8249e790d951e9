"""Tokenizer: bundled file identity, special-token ids, encode/decode, incremental detokenizing."""

from __future__ import annotations

import hashlib
import random

import pytest

from foundation.chat.errors import UnknownTokenError
from foundation.chat.protocol import SPECIAL_TOKEN_IDS, TOOL_RESULT_CLOSE, TOOL_RESULT_OPEN
from foundation.chat.tokenizer import (
    IncrementalDetokenizer,
    bundled_tokenizer_path,
    load_tokenizer,
)


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


def test_bundled_file_is_the_official_one():
    data = bundled_tokenizer_path().read_bytes()
    blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    assert blob.startswith(
        "628e3364caad"
    )  # git blob id of tokenizer.json in the official snapshots


def test_vocab_size(tok):
    assert tok.vocab_size == 129280


@pytest.mark.parametrize(
    ("text", "token_id"), sorted(SPECIAL_TOKEN_IDS.items(), key=lambda kv: kv[1])
)
def test_special_token_ids(tok, text, token_id):
    assert tok.token_to_id(text) == token_id
    assert tok.encode(text) == [token_id]
    assert tok.decode([token_id]) == text


def test_encode_adds_no_bos_and_recognises_special_tokens(tok):
    ids = tok.encode("hi<｜User｜>x<think>y</think>")
    assert ids[0] != 0
    assert 128803 in ids and 128821 in ids and 128822 in ids
    assert tok.encode("") == []


def test_tool_result_tags_are_plain_text(tok):
    for tag in (TOOL_RESULT_OPEN, TOOL_RESULT_CLOSE):
        assert len(tok.encode(tag)) > 1


def test_decode_rejects_unknown_ids(tok):
    with pytest.raises(UnknownTokenError):
        tok.decode([tok.vocab_size])
    with pytest.raises(UnknownTokenError):
        tok.token_bytes(-1)


def _feed_one_by_one(tok, ids):
    detok = IncrementalDetokenizer(tok)
    deltas = [detok.feed([i]) for i in ids]
    deltas.append(detok.finish())
    return deltas, detok


TEXTS = [
    " hello  world 你好😀\n\n<｜User｜>x",
    "emoji 👩‍👩‍👧‍👦 family, flags 🇯🇵🇫🇷, math 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 — and ¿ünïcödé?",
    "温泉煮鸡蛋：这几乎是必试项目。<｜end▁of▁sentence｜>",
]


@pytest.mark.parametrize("text", TEXTS)
def test_incremental_detokenizer_matches_decode(tok, text):
    ids = tok.encode(text)
    deltas, detok = _feed_one_by_one(tok, ids)
    assert "".join(deltas) == text == tok.decode(ids) == detok.text
    assert all("\ufffd" not in d for d in deltas)  # never a partial character


def test_emoji_split_across_tokens_is_held_back(tok):
    ids = tok.encode("😀")
    assert len(ids) == 2  # the emoji's 4 bytes span two byte-level tokens
    detok = IncrementalDetokenizer(tok)
    assert detok.feed(ids[:1]) == ""
    assert detok.feed(ids[1:]) == "😀"


def test_dangling_bytes_flush_as_replacement(tok):
    ids = tok.encode("😀")
    detok = IncrementalDetokenizer(tok)
    assert detok.feed(ids[:1]) == ""
    assert detok.finish() == "\ufffd"


def test_incremental_detokenizer_random_chunks(tok):
    rng = random.Random(0)
    text = "".join(TEXTS) * 3
    ids = tok.encode(text)
    detok = IncrementalDetokenizer(tok)
    out, i = [], 0
    while i < len(ids):
        n = rng.randint(1, 5)
        out.append(detok.feed(ids[i : i + n]))
        i += n
    out.append(detok.finish())
    assert "".join(out) == text
