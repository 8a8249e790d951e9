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

The hot tier is this module: checkpoints in this process under an LRU byte budget, counted per tenant. A checkpoint
holds the state's pages by reference (state/pages.py) and copies only its row logs, so checkpoints of one
conversation, the requests that resume from them and the live state they came from all hold their common full pages
once; the budget counts each page once per tenant however many checkpoints hold it. The cold tier is the session
store (prefix_store.py): a hot miss looks there, and a stored hit turns hot.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from model_worker.sessions.chain import Chain, tail_address
from model_worker.sessions.commits import CommitWriter
from model_worker.sessions.manifest import tenant_key
from model_worker.sessions.prefix_store import StoredPrefixes
from model_worker.sessions.session import OpenSession
from model_worker.sessions.store import SessionStore
from model_worker.state import SequenceState, SharedState
from model_worker.state.pages import PagePool

# Measured on `tiny` (docs/benchmarks.md, prefix cache): a checkpoint costs its row logs and the pages since the last
# (in memory; page groups and a tail in the store), while recomputing a span costs its prefill; every 2,048 tokens
# keeps a prompt that diverges inside a cached document within 2,048 tokens of recompute.
CHECKPOINT_EVERY = 2048
# A hot checkpoint keeps every page of the state alive once the requests that shared them end (~3.5 KB a token for
# Flash), so a state larger than this share of the budget is checkpointed in the store only, whose checkpoint adds
# just the page groups since the last and a tail.
HOT_SHARE = 8
WAIT_S = 120.0  # how long a request waits for another computing its prefix before computing it itself


@dataclass
class Checkpoint:
    tenant_key: str
    tokens: int
    state: SharedState
    block_value: bytes  # the chain value of the block it lies in (its place in the index)


@dataclass(frozen=True)
class PrefixHit:
    """The longest cached prefix of a request's tokens: `tokens` of them, and the state after them (a new state of
    the request's own, restored from the checkpoint)."""

    tokens: int
    state: SequenceState | None


class Computing:
    """A request computing an input: the checkpoints it will leave (each multiple of `every`, the end of its input)
    are worth waiting for to a request whose tokens share them. Its chain, over its input and then its output as it
    grows, addresses its own checkpoints."""

    def __init__(self, tenant_key: str, chain: Chain, token_ids: list[int], every: int) -> None:
        self.tenant_key, self.chain, self.token_ids, self.every = tenant_key, chain, token_ids, every
        self.record: OpenSession | None = None  # where its checkpoints are stored (prefix_store.py)

    def chain_through(self, token_ids: Sequence[int], tokens: int) -> Chain:
        """The request's chain, extended to cover `tokens` of `token_ids` (its input, then its output)."""
        if tokens > self.chain.num_tokens:
            self.chain.extend(token_ids[self.chain.num_tokens : tokens])
        return self.chain

    def reaches(self, tk: str, chain: Chain, token_ids: Sequence[int], limit: int) -> int:
        """The longest checkpoint this computation leaves that `token_ids` (chained as `chain`) can use, up to
        `limit` tokens."""
        if tk != self.tenant_key:
            return 0
        if len(self.token_ids) <= limit and list(token_ids[: len(self.token_ids)]) == self.token_ids:
            return len(self.token_ids)
        blocks = 0  # full chain blocks in common (so every token up to their end), then tokens one by one
        for mine, theirs in zip(self.chain.values[1:], chain.values[1:]):
            if mine != theirs:
                break
            blocks += 1
        shared = blocks * chain.block
        span = slice(shared, shared + chain.block)
        for mine, theirs in zip(self.token_ids[span], token_ids[span]):
            if mine != theirs:
                break
            shared += 1
        return min(shared, limit, len(self.token_ids)) // self.every * self.every  # its input's checkpoints


class PrefixCache:
    def __init__(self, store: SessionStore, budget_bytes: int, every: int = CHECKPOINT_EVERY, metrics=None,
                 writer: CommitWriter | None = None) -> None:
        """With a commit `writer`, checkpoints are also stored (the cold tier, prefix_store.py)."""
        self.store, self.budget_bytes, self.every, self.metrics = store, budget_bytes, every, metrics
        self.cold = StoredPrefixes(store, writer) if writer is not None else None
        self._entries: OrderedDict[str, Checkpoint] = OrderedDict()  # least recently used first
        # The chain value of a block -> {position inside it: how many checkpoints are there} (sequences that part
        # inside a block share its value, so a position may hold several).
        self._by_block: dict[bytes, dict[int, int]] = {}
        self._tenant_bytes: dict[str, int] = {}
        self._held: dict[tuple[str, PagePool, int], int] = {}  # (tenant key, pool, page) -> checkpoints holding it
        self.nbytes = 0
        self._lock = threading.Condition()  # notified as checkpoints are kept and computations end
        self._computing: list[Computing] = []

    @property
    def enabled(self) -> bool:
        return self.budget_bytes > 0

    def chain(self, tenant: str, token_ids: Sequence[int]) -> Chain:
        chain = self.store.tenant_chain(tenant_key(tenant))
        chain.extend(token_ids)
        return chain

    def lookup(self, tenant: str, token_ids: Sequence[int], leave: int = 1) -> PrefixHit:
        """The longest checkpoint of `tenant` that `token_ids` extends, leaving at least `leave` tokens to prefill
        (a generation needs one: its logits start the reply)."""
        hit, _ = self.acquire(tenant, token_ids, compute=False, leave=leave)
        return hit

    def acquire(self, tenant: str, token_ids: Sequence[int], compute: bool = True, wait_s: float = WAIT_S,
                leave: int = 1) -> tuple[PrefixHit, Computing | None]:
        """`lookup`, after waiting (up to `wait_s`) for requests already computing a longer prefix of `token_ids`
        to reach it, so a prefix is computed once however many requests want it at the same time. With `compute`,
        the caller is then registered as computing the rest (others wait for it in turn) until it calls `release`."""
        limit = len(token_ids) - leave
        if not self.enabled or limit < 1:
            return PrefixHit(0, None), None
        tk, chain = tenant_key(tenant), self.chain(tenant, token_ids)
        deadline = time.monotonic() + wait_s
        with self._lock:
            while True:
                position, shared = self._longest(tk, chain, token_ids, limit)
                ahead = max((c.reaches(tk, chain, token_ids, limit) for c in self._computing), default=0)
                left = deadline - time.monotonic()
                if ahead <= position or left <= 0:
                    break
                self._lock.wait(left)
            computing = None
            if compute:
                computing = Computing(tk, chain.copy(), list(token_ids), self.every)
                self._computing.append(computing)
        stored = self.cold.find(tenant, chain, token_ids, position, limit) if self.cold is not None else None
        if stored is not None:
            self._count("stored_hit")
            position, state = stored
            self._keep(tenant, chain, token_ids, state)  # hot from now on
        elif shared is not None:
            self._count("hit")
            state = self.store.new_state()
            state.adopt(shared)  # its pages by reference: concurrent hits hold them once
        else:
            self._count("miss")
            return PrefixHit(0, None), computing
        state.sampling = None  # the RNG of the request that left it is not this request's
        return PrefixHit(position, state), computing

    def advance_session(self, session: OpenSession, tokens: Sequence[int], leave: int = 1) -> int:
        """Move a new session (holding a prefix of `tokens`) on to the longest prefix of `tokens` its tenant computed
        lately, when that is longer than what it holds; its next commit stores every page group (those already
        stored are not written again: they are content-addressed). Returns how many of `tokens` it now holds."""
        hit = self.lookup(session.tenant, tokens, leave)
        if hit.state is not None and hit.tokens > len(session.token_ids):
            session.state, session.token_ids, session.stored_pages = hit.state, list(tokens[: hit.tokens]), {}
            session.chain = self.chain(session.tenant, session.token_ids)
            session.reused_prefix_tokens = hit.tokens
        return len(session.token_ids)

    def release(self, computing: Computing | None) -> None:
        """The request has ended (its checkpoints are kept, or it failed): nobody waits for it any more."""
        if computing is not None:
            with self._lock:
                self._computing.remove(computing)
                self._lock.notify_all()

    def _longest(self, tk: str, chain: Chain, token_ids: Sequence[int], limit: int
                 ) -> tuple[int, SharedState | None]:
        for block in range(limit // chain.block, -1, -1):
            positions = self._by_block.get(chain.values[block], {})
            for position in sorted((p for p in positions if p <= limit), reverse=True):
                address = tail_address(chain, position, token_ids)
                entry = self._entries.get(address)
                if entry is not None and entry.tenant_key == tk and entry.tokens == position:
                    self._entries.move_to_end(address)
                    return position, entry.state
        return 0, None

    def put(self, tenant: str, token_ids: Sequence[int], state: SequenceState,
            computing: Computing | None = None) -> None:
        """Keep `state` (after `token_ids[:state.num_tokens]`, all committed) as a checkpoint, evicting the least
        recently used past the budget (a position already kept is only refreshed); a request's own checkpoints
        (`computing`) are stored too, and addressed with its chain (no hashing of what it already chained)."""
        tokens = state.num_tokens
        if not self.enabled or tokens == 0 or len(token_ids) < tokens:
            return
        if computing is None:
            chain = self.chain(tenant, token_ids[:tokens])
        else:
            chain = computing.chain_through(token_ids, tokens)
            if self.cold is not None:
                computing.record = self.cold.write(tenant, token_ids, state, computing.record)
        self._keep(tenant, chain, token_ids, state)

    def _keep(self, tenant: str, chain: Chain, token_ids: Sequence[int], state: SequenceState) -> None:
        """The hot half of `put`: `chain` covers at least the state's tokens."""
        tokens = state.num_tokens
        if state.nbytes()["total"] > self.budget_bytes // HOT_SHARE:
            return  # it would hold the whole state: past this size, the store's incremental checkpoint only
        address = tail_address(chain, tokens, token_ids)
        with self._lock:
            if address in self._entries:
                self._entries.move_to_end(address)
                return
        shared = state.share()  # outside the lock: the row logs are copied
        entry = Checkpoint(tenant_key(tenant), tokens, shared, chain.values[tokens // chain.block])
        with self._lock:
            if address in self._entries:
                return
            self._entries[address] = entry
            positions = self._by_block.setdefault(entry.block_value, {})
            positions[tokens] = positions.get(tokens, 0) + 1
            self._account(entry, +1)
            while self.nbytes > self.budget_bytes:
                self._evict(next(iter(self._entries)))
            self._lock.notify_all()
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
        """Count a checkpoint in (+1) or out (-1): its row logs, and each page it holds that no other checkpoint of
        its tenant holds."""
        delta = entry.state.log_bytes()
        for pool, page in entry.state.page_holds():
            key = (entry.tenant_key, pool, page)
            held = self._held.get(key, 0) + sign
            if held == (1 if sign > 0 else 0):
                delta += pool.page_bytes
            if held:
                self._held[key] = held
            else:
                self._held.pop(key, None)
        self.nbytes += sign * delta
        left = self._tenant_bytes.get(entry.tenant_key, 0) + sign * delta
        if left:
            self._tenant_bytes[entry.tenant_key] = left
        else:
            self._tenant_bytes.pop(entry.tenant_key, None)

    def _count(self, what: str) -> None:
        if self.metrics is not None:
            self.metrics.prefix_cache.labels(what).inc()


