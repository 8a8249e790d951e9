"""Automatic prefix caching: a request that starts with tokens an earlier request of its tenant computed reuses that
state and prefills only the rest, whatever API it came through (stateless Generate, the gateway's chat completions,
batch lines), with no session to adopt.

Compressed pages are append-only, so the state after any prefix of a sequence is reusable, but only where it was
kept: the window and the compressor tails move with every token. So states are kept at checkpoints, where the next
request will want them: the end of each request's input (a conversation resent with a new message, batch lines that
share a document), the end of its output (the reply the next call resends), and every `every` tokens of a long
prefill (a prompt that leaves a cached document in the middle).

A checkpoint's key is the session store's content address of a tail at that position (chain.py): a hash chain
over the tokens rooted in the tenant's salt, the model's fingerprint and the state layout, so a state is only ever
found by a request of the same tenant, weights and numerics whose tokens agree up to that position. Lookup walks the
request's chain from its end: each chain block lists the checkpoints that lie inside it, and the first whose address
matches is the longest reusable prefix. At least one token is always left to prefill (its logits start the reply).

This is the hot tier: checkpoints are state snapshots in this process under an LRU byte budget, counted per tenant.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from model_worker.sessions.chain import Chain, tail_address
from model_worker.sessions.manifest import tenant_key
from model_worker.sessions.store import SessionStore
from model_worker.state import SequenceState, StateSnapshot

# Measured on `tiny` (docs/benchmarks.md, prefix cache): a checkpoint in the hot tier is a snapshot of the state,
# which grows with the position, while recomputing a span costs its prefill; every 2,048 tokens keeps a prompt that
# diverges inside a cached document within 2,048 tokens of recompute.
CHECKPOINT_EVERY = 2048


@dataclass
class Checkpoint:
    tenant_key: str
    tokens: int
    snapshot: StateSnapshot
    nbytes: int
    block_value: bytes  # the chain value of the block it lies in (its place in the index)


@dataclass(frozen=True)
class PrefixHit:
    """The longest cached prefix of a request's tokens: `tokens` of them, and the state after them (a new state of
    the request's own, restored from the checkpoint)."""

    tokens: int
    state: SequenceState | None


class PrefixCache:
    def __init__(self, store: SessionStore, budget_bytes: int, every: int = CHECKPOINT_EVERY, metrics=None) -> None:
        self.store, self.budget_bytes, self.every, self.metrics = store, budget_bytes, every, metrics
        self._entries: OrderedDict[str, Checkpoint] = OrderedDict()  # least recently used first
        # The chain value of a block -> {position inside it: how many checkpoints are there} (sequences that part
        # inside a block share its value, so a position may hold several).
        self._by_block: dict[bytes, dict[int, int]] = {}
        self._tenant_bytes: dict[str, int] = {}
        self.nbytes = 0
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.budget_bytes > 0

    def chain(self, tenant: str, token_ids: Sequence[int]) -> Chain:
        chain = self.store.tenant_chain(tenant_key(tenant))
        chain.extend(token_ids)
        return chain

    def lookup(self, tenant: str, token_ids: Sequence[int]) -> PrefixHit:
        """The longest checkpoint of `tenant` that `token_ids` extends, leaving at least one token to prefill."""
        if not self.enabled or len(token_ids) < 2:
            return PrefixHit(0, None)
        tk, chain = tenant_key(tenant), self.chain(tenant, token_ids)
        limit = len(token_ids) - 1
        with self._lock:
            for block in range(limit // chain.block, -1, -1):
                positions = self._by_block.get(chain.values[block], {})
                for position in sorted((p for p in positions if p <= limit), reverse=True):
                    address = tail_address(chain, position, token_ids)
                    entry = self._entries.get(address)
                    if entry is not None and entry.tenant_key == tk and entry.tokens == position:
                        self._entries.move_to_end(address)
                        snapshot = entry.snapshot
                        break
                else:
                    continue
                break
            else:
                self._count("miss")
                return PrefixHit(0, None)
        self._count("hit")
        state = self.store.new_state()
        state.restore(snapshot)
        state.sampling = None  # the RNG of the request that left it is not this request's
        return PrefixHit(position, state)

    def put(self, tenant: str, token_ids: Sequence[int], state: SequenceState) -> None:
        """Keep `state` (after exactly `token_ids`, all committed) as a checkpoint, evicting the least recently used
        past the budget. A position already kept is only refreshed."""
        tokens = state.num_tokens
        if not self.enabled or tokens == 0 or len(token_ids) < tokens:
            return
        chain = self.chain(tenant, token_ids[:tokens])
        address = tail_address(chain, tokens, token_ids)
        with self._lock:
            if address in self._entries:
                self._entries.move_to_end(address)
                return
        snapshot = state.snapshot()  # outside the lock: a copy of the state
        nbytes = sum(rows.numel() * rows.element_size() for _, rows in snapshot.tensors.values())
        if nbytes > self.budget_bytes:
            return
        entry = Checkpoint(tenant_key(tenant), tokens, snapshot, nbytes, chain.values[tokens // chain.block])
        with self._lock:
            if address in self._entries:
                return
            self._entries[address] = entry
            positions = self._by_block.setdefault(entry.block_value, {})
            positions[tokens] = positions.get(tokens, 0) + 1
            self._account(entry, +1)
            while self.nbytes > self.budget_bytes:
                self._evict(next(iter(self._entries)))
        if self.metrics is not None:
            self.metrics.prefix_cache_stored.inc()

    def tenant_bytes(self, tenant: str) -> int:
        with self._lock:
            return self._tenant_bytes.get(tenant_key(tenant), 0)

    def __len__(self) -> int:
        return len(self._entries)

    def _evict(self, address: str) -> None:
        entry = self._entries.pop(address)
        positions = self._by_block[entry.block_value]
        positions[entry.tokens] -= 1
        if not positions[entry.tokens]:
            del positions[entry.tokens]
        if not positions:
            del self._by_block[entry.block_value]
        self._account(entry, -1)
        self._count("eviction")

    def _account(self, entry: Checkpoint, sign: int) -> None:
        self.nbytes += sign * entry.nbytes
        left = self._tenant_bytes.get(entry.tenant_key, 0) + sign * entry.nbytes
        if left:
            self._tenant_bytes[entry.tenant_key] = left
        else:
            self._tenant_bytes.pop(entry.tenant_key, None)

    def _count(self, what: str) -> None:
        if self.metrics is not None:
            self.metrics.prefix_cache.labels(what).inc()
