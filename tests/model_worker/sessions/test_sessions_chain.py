"""Content addressing of stored session state (chain.py): the chain block and page spans of real configs, Chain values
independent of how tokens arrive, truncate/re-extend and copy, and page / token-page / tail addresses that agree exactly
when salt, fingerprint, layout and the tokens up to the covered position agree (prefix sharing); plus the manifest
helpers (tenant keys, session-id checks, key layout, commit records, packed token ids)."""

from __future__ import annotations

import json
import random
import struct

import pytest

from model_worker.config import FLASH, PRO, TINY
from model_worker.numerics import OFFICIAL, REFERENCE
from model_worker.sessions.chain import (
    TOKEN_PAGE_BLOCKS,
    Chain,
    chain_block,
    layout_id,
    page_address,
    page_spans,
    tail_address,
    token_page_address,
)
from model_worker.sessions.codec import BlobCodec
from model_worker.sessions.errors import IncompatibleSession, InvalidSessionRequest
from model_worker.sessions.manifest import (
    FORMAT,
    Commit,
    Head,
    blob_key,
    check_session_id,
    commit_key,
    meta_key,
    pack_tokens,
    salt_key,
    session_prefix,
    tenant_key,
)
from model_worker.state import PAGE_ENTRIES, StateLayout

SALT = bytes(range(32))
OTHER_SALT = bytes(range(1, 33))
FINGERPRINT = "tiny-weights-sha256:0123abcd"
LAYOUT = StateLayout(TINY, OFFICIAL)
BLOCK = 256
LAYOUTS = {
    "tiny-official": StateLayout(TINY, OFFICIAL),
    "tiny-reference": StateLayout(TINY, REFERENCE),
    "flash-official": StateLayout(FLASH, OFFICIAL),
    "flash-reference": StateLayout(FLASH, REFERENCE),
    "pro-official": StateLayout(PRO, OFFICIAL),
}


def _tokens(n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(0, 129_280) for _ in range(n)]


def _chain(tokens: list[int], salt: bytes = SALT, fingerprint: str = FINGERPRINT,
           layout: StateLayout = LAYOUT) -> Chain:
    chain = Chain.rooted(salt, fingerprint, layout)
    chain.extend(tokens)
    return chain


def _changed(tokens: list[int], position: int) -> list[int]:
    out = list(tokens)
    out[position] = (out[position] + 1) % 129_280
    return out


def _state(chain: Chain) -> tuple:
    return chain.block, list(chain.values), list(chain.pending), chain.num_tokens


# --- chain block and page spans --------------------------------------------------------------------------------------


def test_page_entries_is_64():
    assert PAGE_ENTRIES == 64


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_chain_block_of_real_configs(name):
    layout = LAYOUTS[name]
    assert {r for r in layout.config.compress_ratios if r > 0} == {4, 128}
    assert page_spans(layout) == {4: 256, 128: 8192}
    assert chain_block(layout) == 256
    for span in page_spans(layout).values():
        assert span % chain_block(layout) == 0
    assert Chain.rooted(SALT, FINGERPRINT, layout).block == 256


@pytest.mark.parametrize("ratios, block", [((0, 0, 0, 0, 0), PAGE_ENTRIES), ((0, 2, 0, 2, 0), 128),
                                          ((0, 4, 6, 4, 0), 128), ((0, 128, 128, 128, 0), 8192),
                                          ((0, 4, 128, 4, 0), 256)])
def test_chain_block_is_the_gcd_of_page_spans(ratios, block):
    layout = StateLayout(TINY.replace(compress_ratios=ratios), OFFICIAL)
    assert chain_block(layout) == block
    assert all(span % block == 0 for span in page_spans(layout).values())
    assert sorted(page_spans(layout)) == sorted({r for r in ratios if r > 0})


# --- layout id -------------------------------------------------------------------------------------------------------


def test_layout_id_differs_between_numerics():
    assert layout_id(StateLayout(TINY, OFFICIAL)) != layout_id(StateLayout(TINY, REFERENCE))
    assert layout_id(StateLayout(FLASH, OFFICIAL)) != layout_id(StateLayout(FLASH, REFERENCE))
    assert "official" in layout_id(StateLayout(TINY, OFFICIAL))
    assert "reference" in layout_id(StateLayout(TINY, REFERENCE))


def test_layout_id_differs_between_geometries_and_is_stable():
    ids = {layout_id(layout) for layout in LAYOUTS.values()}
    assert len(ids) == len(LAYOUTS)
    assert layout_id(StateLayout(TINY, OFFICIAL)) == layout_id(StateLayout(TINY.replace(), OFFICIAL))
    assert layout_id(LAYOUT) != layout_id(StateLayout(TINY.replace(window_size=64), OFFICIAL))
    assert layout_id(LAYOUT) != layout_id(StateLayout(TINY.replace(compress_ratios=(0, 4, 128, 128, 0)), OFFICIAL))


# --- Chain -----------------------------------------------------------------------------------------------------------


def test_empty_chain():
    chain = Chain.rooted(SALT, FINGERPRINT, LAYOUT)
    assert chain.num_tokens == 0
    assert chain.pending == []
    assert len(chain.values) == 1
    assert len(chain.at(0)) == 32
    chain.extend([])
    assert chain.num_tokens == 0 and len(chain.values) == 1


def test_roots_depend_on_salt_fingerprint_and_layout():
    roots = {
        Chain.rooted(SALT, FINGERPRINT, LAYOUT).at(0),
        Chain.rooted(OTHER_SALT, FINGERPRINT, LAYOUT).at(0),
        Chain.rooted(SALT, FINGERPRINT + "x", LAYOUT).at(0),
        Chain.rooted(SALT, FINGERPRINT, StateLayout(TINY, REFERENCE)).at(0),
        Chain.rooted(SALT, FINGERPRINT, StateLayout(FLASH, OFFICIAL)).at(0),
    }
    assert len(roots) == 5
    assert Chain.rooted(SALT, FINGERPRINT, LAYOUT).at(0) == Chain.rooted(bytes(SALT), FINGERPRINT, LAYOUT).at(0)


def test_extend_counts_blocks_and_pending():
    tokens = _tokens(3 * BLOCK + 17, seed=1)
    chain = _chain(tokens)
    assert chain.num_tokens == len(tokens)
    assert len(chain.values) == 4
    assert chain.pending == tokens[3 * BLOCK :]
    assert len({chain.at(k * BLOCK) for k in range(4)}) == 4


def test_extend_in_pieces_equals_all_at_once():
    rng = random.Random(2024)
    for trial in range(25):
        tokens = _tokens(rng.randrange(0, 4 * BLOCK + 50), seed=trial)
        whole = _chain(tokens)
        pieces = Chain.rooted(SALT, FINGERPRINT, LAYOUT)
        start = 0
        while start < len(tokens):
            size = rng.choice([0, 1, 2, 3, 7, 63, 255, 256, 257, 511, rng.randrange(0, 700)])
            pieces.extend(tokens[start : start + size])
            start += size
            assert pieces.num_tokens == min(start, len(tokens))
        assert _state(pieces) == _state(whole), trial


def test_extend_one_token_at_a_time_equals_all_at_once():
    tokens = _tokens(2 * BLOCK + 3, seed=5)
    one = Chain.rooted(SALT, FINGERPRINT, LAYOUT)
    for token in tokens:
        one.extend([token])
    assert _state(one) == _state(_chain(tokens))


def test_extend_accepts_any_sequence():
    tokens = _tokens(BLOCK + 10, seed=6)
    assert _state(_chain(tuple(tokens))) == _state(_chain(tokens))


def test_at_requires_a_stored_block_boundary():
    chain = _chain(_tokens(2 * BLOCK + 5, seed=7))
    chain.at(2 * BLOCK)
    with pytest.raises(ValueError):
        chain.at(BLOCK + 1)
    with pytest.raises(ValueError):
        chain.at(3 * BLOCK)


@pytest.mark.parametrize("cut", [0, 1, 255, 256, 257, 511, 512, 700, 999, 1000])
def test_truncate_then_extend_equals_never_truncating(cut):
    tokens = _tokens(1000, seed=8)
    full = _chain(tokens)
    chain = full.copy()
    chain.truncate(cut, tokens)
    assert chain.num_tokens == cut
    assert _state(chain) == _state(_chain(tokens[:cut]))
    chain.extend(tokens[cut:])
    assert _state(chain) == _state(full)


def test_truncate_then_extend_other_tokens_equals_a_fresh_chain():
    tokens = _tokens(900, seed=9)
    other = _tokens(600, seed=10)
    rng = random.Random(11)
    for _ in range(10):
        cut = rng.randrange(0, len(tokens) + 1)
        chain = _chain(tokens)
        chain.truncate(cut, tokens)
        chain.extend(other)
        assert _state(chain) == _state(_chain(tokens[:cut] + other)), cut


def test_copy_is_independent():
    tokens = _tokens(BLOCK + 100, seed=12)
    original = _chain(tokens)
    snapshot = _state(original)
    copy = original.copy()
    assert _state(copy) == snapshot
    copy.extend(_tokens(500, seed=13))
    assert _state(original) == snapshot
    copy.truncate(10, tokens)
    assert _state(original) == snapshot
    original_copy = original.copy()
    original.extend(_tokens(300, seed=14))
    assert _state(original_copy) == snapshot
    assert copy.pending is not original.pending and copy.values is not original.values


# --- addresses -------------------------------------------------------------------------------------------------------


def test_addresses_are_hex_sha256():
    chain = _chain(_tokens(TOKEN_PAGE_BLOCKS * BLOCK, seed=15))
    for address in (page_address(chain, 4, 0, 256), token_page_address(chain, 0), tail_address(chain, 5, [1] * 5)):
        assert len(address) == 64
        int(address, 16)


def test_page_addresses_equal_for_equal_inputs():
    tokens = _tokens(8192 + 300, seed=16)
    a, b = _chain(tokens), _chain(tokens)
    for index in range(32):
        assert page_address(a, 4, index, 256) == page_address(b, 4, index, 256)
    assert page_address(a, 128, 0, 8192) == page_address(b, 128, 0, 8192)
    pieces = Chain.rooted(SALT, FINGERPRINT, LAYOUT)
    for start in range(0, len(tokens), 333):
        pieces.extend(tokens[start : start + 333])
    assert page_address(pieces, 128, 0, 8192) == page_address(a, 128, 0, 8192)


def test_page_addresses_differ_by_page():
    chain = _chain(_tokens(8192, seed=17))
    addresses = {page_address(chain, 4, index, 256) for index in range(32)}
    addresses.add(page_address(chain, 128, 0, 8192))
    assert len(addresses) == 33
    assert page_address(chain, 4, 31, 256) != page_address(chain, 128, 0, 8192)  # same tokens, other stream


@pytest.mark.parametrize("other", ["salt", "fingerprint", "numerics", "geometry"])
def test_addresses_differ_by_root(other):
    tokens = _tokens(TOKEN_PAGE_BLOCKS * BLOCK + 40, seed=18)
    base = _chain(tokens)
    changed = {
        "salt": lambda: _chain(tokens, salt=OTHER_SALT),
        "fingerprint": lambda: _chain(tokens, fingerprint=FINGERPRINT + "-other"),
        "numerics": lambda: _chain(tokens, layout=StateLayout(TINY, REFERENCE)),
        "geometry": lambda: _chain(tokens, layout=StateLayout(FLASH, OFFICIAL)),
    }[other]()
    for index in range(3):
        assert page_address(base, 4, index, 256) != page_address(changed, 4, index, 256)
    assert token_page_address(base, 0) != token_page_address(changed, 0)
    for position in (0, 17, 256, len(tokens)):
        assert tail_address(base, position, tokens) != tail_address(changed, position, tokens)


@pytest.mark.parametrize("position", [0, 1, 100, 255, 256, 300, 511])
def test_page_address_changes_with_any_token_before_the_page_end(position):
    tokens = _tokens(600, seed=19)
    base, changed = _chain(tokens), _chain(_changed(tokens, position))
    for index in range(2):  # pages covering [0, 256) and [0, 512)
        same = position >= (index + 1) * 256
        assert (page_address(base, 4, index, 256) == page_address(changed, 4, index, 256)) == same, index


def test_page_address_ignores_tokens_after_the_page_end():
    tokens = _tokens(8192, seed=20)
    base = _chain(tokens)
    for position in (256, 257, 400, 8191):
        assert page_address(base, 4, 0, 256) == page_address(_chain(_changed(tokens, position)), 4, 0, 256)
    shorter = _chain(tokens[:256])
    longer = _chain(tokens[:300] + _tokens(5000, seed=21))
    assert page_address(shorter, 4, 0, 256) == page_address(base, 4, 0, 256) == page_address(longer, 4, 0, 256)
    # a page of the 128-ratio streams covers 8,192 tokens: its address moves with any of them
    assert page_address(base, 128, 0, 8192) != page_address(_chain(_changed(tokens, 8191)), 128, 0, 8192)
    assert page_address(base, 128, 0, 8192) != page_address(_chain(_changed(tokens, 0)), 128, 0, 8192)


def test_token_page_address_covers_its_tokens_only():
    per_page = TOKEN_PAGE_BLOCKS * BLOCK
    assert per_page == 4096
    tokens = _tokens(2 * per_page + 10, seed=22)
    base = _chain(tokens)
    assert token_page_address(base, 0) != token_page_address(base, 1)
    assert token_page_address(_chain(tokens), 1) == token_page_address(base, 1)
    for position, same0, same1 in [(0, False, False), (per_page - 1, False, False), (per_page, True, False),
                                   (2 * per_page - 1, True, False), (2 * per_page, True, True)]:
        changed = _chain(_changed(tokens, position))
        assert (token_page_address(changed, 0) == token_page_address(base, 0)) == same0, position
        assert (token_page_address(changed, 1) == token_page_address(base, 1)) == same1, position


def test_tail_address_equal_for_equal_inputs():
    tokens = _tokens(700, seed=23)
    a, b = _chain(tokens), _chain(tokens)
    for position in (0, 1, 255, 256, 257, 600, 700):
        assert tail_address(a, position, tokens) == tail_address(b, position, tokens)


def test_tail_address_differs_between_positions():
    tokens = _tokens(700, seed=24)
    chain = _chain(tokens)
    positions = [0, 1, 2, 255, 256, 257, 300, 511, 512, 513, 699, 700]
    addresses = {tail_address(chain, position, tokens) for position in positions}
    assert len(addresses) == len(positions)
    assert tail_address(chain, 256, tokens) != page_address(chain, 4, 0, 256)


def test_tail_address_changes_with_tokens_in_the_last_partial_block():
    tokens = _tokens(700, seed=25)
    chain = _chain(tokens)
    for position in (512, 513, 600, 699):
        changed = _changed(tokens, position)
        assert tail_address(chain, 700, tokens) != tail_address(_chain(changed), 700, changed), position
    for position in (0, 255, 511):  # in a full block: the chain value carries the change
        changed = _changed(tokens, position)
        assert tail_address(chain, 700, tokens) != tail_address(_chain(changed), 700, changed), position


def test_tail_address_ignores_tokens_after_its_position():
    tokens = _tokens(700, seed=26)
    chain = _chain(tokens)
    for position in (600, 650, 699):
        changed = _changed(tokens, position)
        assert tail_address(chain, 600, tokens) == tail_address(_chain(changed), 600, changed)
    assert tail_address(chain, 600, tokens) == tail_address(_chain(tokens[:600]), 600, tokens[:600])


# --- manifest helpers ------------------------------------------------------------------------------------------------


def test_tenant_key():
    key = tenant_key("acme")
    assert len(key) == 32
    assert all(c in "0123456789abcdef" for c in key)
    assert tenant_key("acme") == key
    keys = {tenant_key(t) for t in ("acme", "Acme", "acme ", "globex", "a/b", "../..", "日本", "x" * 1000)}
    assert len(keys) == 8
    assert all(len(k) == 32 for k in keys)


def test_tenant_key_rejects_the_empty_string():
    with pytest.raises(InvalidSessionRequest):
        tenant_key("")
    assert issubclass(InvalidSessionRequest, ValueError)


@pytest.mark.parametrize("session_id", ["abc-1.2_x", "a", "A9", "...a", "x" * 128, "-", "_", "a..b", "v1.0"])
def test_check_session_id_accepts(session_id):
    assert check_session_id(session_id) == session_id


@pytest.mark.parametrize("session_id", ["", "..", ".", "a/b", "/", "x" * 129, "é", "idé", "日本", "a b", "a\nb",
                                        "abc\n", "a\\b", "a:b", "a\x00b", "ａ"], ids=repr)
def test_check_session_id_rejects(session_id):
    with pytest.raises(InvalidSessionRequest):
        check_session_id(session_id)


def test_key_layout():
    tk = tenant_key("acme")
    assert salt_key(tk) == f"t/{tk}/salt"
    assert blob_key(tk, "ab" * 32) == f"t/{tk}/b/{'ab' * 32}"
    assert session_prefix(tk) == f"t/{tk}/s/"
    assert session_prefix(tk, "s1") == f"t/{tk}/s/s1/"
    assert meta_key(tk, "s1") == f"t/{tk}/s/s1/meta"
    assert commit_key(tk, "s1", 7) == f"t/{tk}/s/s1/c/000000000007"
    seqs = [0, 1, 9, 10, 99, 100, 123456789012]
    assert sorted(commit_key(tk, "s1", s) for s in seqs) == [commit_key(tk, "s1", s) for s in seqs]
    assert all(commit_key(tk, "s1", s).startswith(session_prefix(tk, "s1")) for s in seqs)


def _commit(**changes) -> Commit:
    fields = dict(
        session_id="chat-1", seq=3, fingerprint=FINGERPRINT, layout=layout_id(LAYOUT), num_tokens=4100, token_pages=1,
        last_token_page="ab" * 32, partial_tokens=pack_tokens([5, 6, 7, 2**31 - 1]), tail="cd" * 32,
        head=Head(think_max=True, system_prompt="You are terse.",
                  tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
                  head_tokens=42),
        created_at=1_700_000_000.25, parent="chat-0@2", checkpoint=True, sampling="c2FtcGxlcg==",
    )
    fields.update(changes)
    return Commit(**fields)


def test_commit_record_round_trip():
    commit = _commit()
    record = commit.to_record()
    assert record["format"] == FORMAT
    assert record["head"] == {"think_max": True, "system_prompt": "You are terse.", "head_tokens": 42,
                              "tools": commit.head.tools, "response_format": None}
    back = Commit.from_record(record)
    assert back == commit
    assert isinstance(back.head, Head)


def test_commit_record_round_trip_through_json_and_the_codec():
    for commit in (_commit(), _commit(last_token_page=None, parent=None, sampling=None, checkpoint=False,
                                      token_pages=0, partial_tokens=pack_tokens([]), head=Head()),):
        codec = BlobCodec()
        record = codec.open_json("k", codec.seal_json("k", commit.to_record()))
        assert Commit.from_record(record) == commit
        assert Commit.from_record(json.loads(json.dumps(commit.to_record()))) == commit


def test_commit_record_defaults():
    commit = Commit(session_id="s", seq=0, fingerprint="f", layout="l", num_tokens=0, token_pages=0,
                    last_token_page=None, partial_tokens=pack_tokens([]), tail="t", head=Head(), created_at=0.0)
    assert (commit.parent, commit.checkpoint, commit.sampling) == (None, False, None)
    assert Commit.from_record(commit.to_record()) == commit


@pytest.mark.parametrize("fmt", ["dsv4-session/2", "dsv4-session/0", "", None])
def test_commit_record_of_another_format_is_incompatible(fmt):
    record = _commit().to_record()
    record["format"] = fmt
    with pytest.raises(IncompatibleSession):
        Commit.from_record(record)


def test_commit_record_without_format_is_incompatible():
    record = _commit().to_record()
    del record["format"]
    with pytest.raises(IncompatibleSession):
        Commit.from_record(record)


@pytest.mark.parametrize("ids", [[], [0], [1, 2, 3], [2**31 - 1, 0, 129_279], list(range(1000)), [-1, -(2**31)]],
                         ids=["empty", "zero", "small", "extremes", "thousand", "negative"])
def test_pack_tokens_round_trip(ids):
    packed = pack_tokens(ids)
    assert isinstance(packed, str)
    assert _commit(partial_tokens=packed).partial_token_ids() == ids


def test_pack_tokens_empty_is_empty_string():
    assert pack_tokens([]) == ""
    assert _commit(partial_tokens="").partial_token_ids() == []


def test_pack_tokens_rejects_out_of_range_ids():
    with pytest.raises(struct.error):
        pack_tokens([2**31])
