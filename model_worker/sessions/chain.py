"""Content addresses of stored pages: a hash chain over token ids, rooted in the model, the state layout and a
per-tenant salt.

chain[0] = sha256("dsv4-session-chain/1" | salt (hex) | fingerprint | layout id);
chain[k+1] = sha256(chain[k] | the k-th block of `block` token ids as int32 LE).

Everything a page holds is a function of the tokens before its end (the model is causal), so a page's address is a
hash of the chain at its end: two sessions of one tenant whose tokens agree up to a page's end address the same page,
whatever they did after. The salt keeps tenants from ever sharing (or probing) pages.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Sequence

from model_worker.state import PAGE_ENTRIES, StateLayout

TOKEN_PAGE_BLOCKS = 16  # a token page holds 16 chain blocks (4,096 tokens for DeepSeek-V4's 256-token block)


def layout_id(layout: StateLayout) -> str:
    """What must match for stored state to be reusable, besides the weights: numerics and the paged geometry."""
    c = layout.config
    return (f"numerics={layout.numerics.name};page={PAGE_ENTRIES};ratios={','.join(map(str, c.compress_ratios))};"
            f"window={c.window_size};layers={c.n_layers}+{c.n_mtp_layers}")


def page_spans(layout: StateLayout) -> dict[int, int]:
    """Tokens covered by one page of each compression ratio in use: {ratio: PAGE_ENTRIES * ratio}."""
    return {r: PAGE_ENTRIES * r for r in sorted({r for r in layout.config.compress_ratios if r > 0})}


def chain_block(layout: StateLayout) -> int:
    """Tokens per chain link: every page span is a whole number of links."""
    spans = list(page_spans(layout).values())
    return math.gcd(*spans) if spans else PAGE_ENTRIES


class Chain:
    """The chain values of one token sequence, extended as tokens are appended."""

    def __init__(self, root: bytes, block: int) -> None:
        self.block = block
        self.values = [root]  # values[k] = chain after k full blocks
        self.pending: list[int] = []

    @classmethod
    def rooted(cls, salt: bytes, fingerprint: str, layout: StateLayout) -> "Chain":
        root = hashlib.sha256(b"dsv4-session-chain/1\0" + salt.hex().encode() + b"\0" + fingerprint.encode() + b"\0"
                              + layout_id(layout).encode()).digest()
        return cls(root, chain_block(layout))

    def copy(self) -> "Chain":
        other = Chain(self.values[0], self.block)
        other.values, other.pending = list(self.values), list(self.pending)
        return other

    def extend(self, token_ids: Sequence[int]) -> None:
        self.pending.extend(token_ids)
        full, value = len(self.pending) // self.block * self.block, self.values[-1]
        for first in range(0, full, self.block):  # by index, then one cut: linear in the tokens added
            value = hashlib.sha256(value + _pack(self.pending[first : first + self.block])).digest()
            self.values.append(value)
        del self.pending[:full]

    @property
    def num_tokens(self) -> int:
        return (len(self.values) - 1) * self.block + len(self.pending)

    def at(self, tokens: int) -> bytes:
        """Chain value after `tokens` tokens (a multiple of the block)."""
        if tokens % self.block or tokens // self.block >= len(self.values):
            raise ValueError(f"the chain has no value at {tokens} tokens (block {self.block}, {self.num_tokens} held)")
        return self.values[tokens // self.block]

    def truncate(self, tokens: int, token_ids: Sequence[int]) -> None:
        """Back to `tokens` tokens; token_ids are the whole sequence (to rebuild the pending block)."""
        full = tokens // self.block
        self.values = self.values[: full + 1]
        self.pending = list(token_ids[full * self.block : tokens])


def page_address(chain: Chain, ratio: int, index: int, span: int) -> str:
    """Address of page `index` of the streams compressed at `ratio` (covers tokens [0, (index + 1) * span))."""
    return _address(b"kv", ratio, index, chain.at((index + 1) * span))


def token_page_address(chain: Chain, index: int) -> str:
    tokens = (index + 1) * chain.block * TOKEN_PAGE_BLOCKS
    return _address(b"tokens", 0, index, chain.at(tokens))


def tail_address(chain: Chain, tokens: int, token_ids: Sequence[int], offset: int = 0) -> str:
    """Address of the engine's tail state after `tokens` tokens (any position, not only block ends); token_ids[i]
    is token offset + i (offset <= the last block end before `tokens`)."""
    full = tokens // chain.block * chain.block
    return _address(b"tail", tokens, 0, chain.at(full) + _pack(token_ids[full - offset : tokens - offset]))


def _address(kind: bytes, a: int, b: int, value: bytes) -> str:
    return hashlib.sha256(kind + struct.pack("<qq", a, b) + value).hexdigest()


def _pack(token_ids: Sequence[int]) -> bytes:
    return struct.pack(f"<{len(token_ids)}i", *token_ids)
