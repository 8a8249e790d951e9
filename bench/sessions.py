"""Persistent sessions on `tiny` (official numerics): resume vs re-prefill, stored bytes, commit cost, shared prefixes.

1. Time to the first new token after resuming an N-token session from each tier (hot: in this process; warm: Redis in
   front of the disk; cold: the disk alone), against re-prefilling the same token log (chunks of 2,048).
2. Bytes stored per token vs the state layout's analytic growth (pages only) plus the fixed tail.
3. Bytes written and time per commit of a 64-token turn at 1K, 100K and 1M tokens of history.
4. A new session over a stored 8K-token head (shared prefix) vs prefilling the head.
Sessions of more tokens than a CPU prefills in a benchmark are filled synthetically (labelled): their pages and tail
are what a real prefill writes, their contents random.

    python -m bench.sessions [--contexts 32768,131072] [--histories 1024,102400,1048576] [--redis URL]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time

import torch

from bench.synthetic_state import fill_synthetic
from foundation.blobs.stores import TieredBlobs
from model_worker.engine.loading import load_model
from model_worker.engine.threads import threads_for
from model_worker.model import ForwardBatch
from model_worker.sessions import Head, SessionStore, open_blobs
from model_worker.sessions.manifest import tenant_key

CHUNK = 2048
TENANT = "bench"


def prefill(model, state, token_ids: list[int]) -> torch.Tensor:
    logits = None
    for start in range(0, len(token_ids), CHUNK):
        with threads_for(CHUNK):
            logits = model(ForwardBatch.single(token_ids[start : start + CHUNK], state)).logits[-1]
        state.commit()
    return logits


def first_token(model, session) -> float:
    start = time.perf_counter()
    with threads_for(1):
        model(ForwardBatch.single([7], session.state))
    return time.perf_counter() - start


def synthetic_session(store: SessionStore, model, tokens: int, seed: int = 0):
    """A stored session of `tokens` tokens whose state is filled synthetically (one commit writes every page)."""
    session = store.create(TENANT, Head())
    token_ids = torch.randint(0, model.config.vocab_size, (tokens,), generator=torch.Generator().manual_seed(seed))
    fill_synthetic(session.state, tokens, seed)
    store.commit(session, token_ids.tolist())
    return session


def stored_bytes(blobs, tenant: str = TENANT) -> int:
    return sum(blobs.size(key) or 0 for key in blobs.list(f"t/{tenant_key(tenant)}/b/"))


def resume_rows(model, contexts: list[int], redis_url: str | None) -> None:
    print("| context (synthetic state) | re-prefill s | hot s | warm (Redis + disk) s | cold (disk) s | "
          "cold speed-up |")
    print("|---|---|---|---|---|---|")
    for tokens in contexts:
        with tempfile.TemporaryDirectory() as root:
            disk = open_blobs(root)
            warm = open_blobs(redis_url) if redis_url else None
            blobs = TieredBlobs(warm, disk) if warm else disk
            store = SessionStore(blobs, model.fingerprint, model.layout)
            session = synthetic_session(store, model, tokens)
            hot = first_token(model, session)
            warm_s = "-"
            if warm:
                start = time.perf_counter()
                opened = SessionStore(blobs, model.fingerprint, model.layout).open(TENANT, session.session_id)
                warm_s = f"{time.perf_counter() - start + first_token(model, opened):.2f}"
            start = time.perf_counter()
            opened = SessionStore(disk, model.fingerprint, model.layout).open(TENANT, session.session_id)
            cold = time.perf_counter() - start + first_token(model, opened)
            start = time.perf_counter()
            prefill(model, model.new_state(), session.token_ids + [7])
            again = time.perf_counter() - start
            if warm:
                for key in list(warm.list("")):
                    warm.delete(key)
        print(f"| {tokens:,} | {again:.1f} | {hot:.3f} | {warm_s} | {cold:.2f} | **{again / cold:.0f}x** |",
              flush=True)


def bytes_rows(model, contexts: list[int]) -> None:
    layout = model.layout
    analytic = sum(layout.growth_bytes_per_token(kind) for kind in model.config.layer_types)
    print("\n| context (synthetic state) | stored bytes | per token | analytic pages per token | stored / analytic |")
    print("|---|---|---|---|---|")
    for tokens in contexts:
        with tempfile.TemporaryDirectory() as root:
            store = SessionStore(open_blobs(root), model.fingerprint, model.layout)
            session = synthetic_session(store, model, tokens)
            total = stored_bytes(store.blobs)
            tail = session.state.nbytes()
            fixed = tail["window"] + tail["compressor_tail"] + tail["mtp_inputs"]
        print(f"| {tokens:,} | {total:,} | {total / tokens:.1f} | {analytic:.1f} (+ {fixed:,} B fixed tail) | "
              f"{(total - fixed) / (analytic * tokens):.3f} |", flush=True)


def commit_rows(model, histories: list[int]) -> None:
    print("\n| history (synthetic state) | commit bytes, largest of 3 turns of 64 tokens | median commit ms |")
    print("|---|---|---|")
    turn = list(range(100, 164))
    for tokens in histories:
        with tempfile.TemporaryDirectory() as root:
            store = SessionStore(open_blobs(root), model.fingerprint, model.layout)
            session = synthetic_session(store, model, tokens)
            results = []
            for _ in range(3):
                with threads_for(len(turn)):
                    model(ForwardBatch.single(turn, session.state))
                start = time.perf_counter()
                written = store.commit(session, turn).bytes_written
                results.append((written, time.perf_counter() - start))
        largest, median = max(r[0] for r in results), sorted(r[1] for r in results)[1]
        print(f"| {tokens:,} | {largest:,} | {median * 1e3:.1f} |", flush=True)


def prefix_rows(model, head_tokens: int) -> None:
    head = torch.randint(0, model.config.vocab_size, (head_tokens,), generator=torch.Generator().manual_seed(1))
    head = head.tolist()
    with tempfile.TemporaryDirectory() as root:
        store = SessionStore(open_blobs(root), model.fingerprint, model.layout)
        first = store.create(TENANT, Head(head_tokens=head_tokens))
        start = time.perf_counter()
        prefill(model, first.state, head)
        store.commit(first, head)
        prefilled = time.perf_counter() - start + first_token(model, first)
        start = time.perf_counter()
        second = store.create(TENANT, Head(head_tokens=head_tokens), prefix=head)
        reused = time.perf_counter() - start + first_token(model, second)
        assert second.reused_prefix_tokens == head_tokens
    print(f"\n| shared head | prefill + first token s | reuse + first token s | speed-up |\n|---|---|---|---|\n"
          f"| {head_tokens:,} tokens | {prefilled:.2f} | {reused:.3f} | **{prefilled / reused:.0f}x** |")


@torch.no_grad()  # inference: the model's forward leaves that to its callers
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contexts", default="32768,131072")
    parser.add_argument("--histories", default="1024,102400,1048576")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0?prefix=bench-sessions:")
    parser.add_argument("--head", type=int, default=8192)
    args = parser.parse_args()
    model = load_model(None, "tiny", numerics="official")
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads\n")
    contexts = [int(c) for c in args.contexts.split(",")]
    resume_rows(model, contexts, args.redis or None)
    bytes_rows(model, contexts)
    commit_rows(model, [int(h) for h in args.histories.split(",")])
    prefix_rows(model, args.head)


if __name__ == "__main__":
    main()
