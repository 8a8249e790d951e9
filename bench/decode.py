"""Decode speed of the `tiny` model: batch 1, greedy, official numerics.

1. After a real prefill of 4,096 tokens (chunks of 512): median time per token over 100 tokens.
2. From 4K to 1M tokens of context: median time per token with the state filled synthetically (labelled), and
   the share of the Lightning Indexer (scoring + top-k), the one per-token cost that grows with the CSA entries.
   Contexts take turns in rounds of a few tokens, so the machine's slow spells hit them alike.

    python -m bench.decode [--tokens 100] [--contexts 4096,16384,65536,262144,1048576]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

import kernels
from bench.synthetic_state import fill_synthetic
from model_worker.engine.loading import load_model
from model_worker.engine.threads import threads_for
from model_worker.model import ForwardBatch

_indexer_seconds = [0.0]
ROUNDS = 5


def _timed_indexer():
    original = kernels.indexer_topk

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            _indexer_seconds[0] += time.perf_counter() - start

    kernels.indexer_topk = wrapper


def decode_times(model, state, tokens: int, first_token: int = 1000) -> tuple[list[float], float]:
    """Greedy decode `tokens` steps; per-step seconds and the indexer's total seconds."""
    token, times = first_token, []
    _indexer_seconds[0] = 0.0
    for _ in range(tokens):
        start = time.perf_counter()
        with threads_for(1):
            logits = model(ForwardBatch.single([token], state)).logits[-1:]
        state.commit()
        token = int(kernels.argmax(logits)[0])
        times.append(time.perf_counter() - start)
    return times, _indexer_seconds[0]


@torch.no_grad()  # inference: the model's forward leaves that to its callers
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--prefill", type=int, default=4096)
    parser.add_argument("--contexts", default="4096,16384,65536,262144,1048576")
    parser.add_argument("--context-tokens", type=int, default=40)
    args = parser.parse_args()
    _timed_indexer()
    model = load_model(None, "tiny", numerics="official")
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")
    state = model.new_state()
    ids = torch.randint(0, 100000, (args.prefill,), generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    for first in range(0, args.prefill, 512):
        with threads_for(512):
            model(ForwardBatch.single(ids[first : first + 512], state, logits="none"))
        state.commit()
    prefill_s = time.perf_counter() - start
    times, _ = decode_times(model, state, args.tokens)
    median = statistics.median(times)
    print(f"\nreal prefill {args.prefill} tokens: {prefill_s:.1f} s ({args.prefill / prefill_s:.0f} tokens/s)")
    print(f"decode after it: median {median * 1e3:.1f} ms/token = {1 / median:.1f} tokens/s over "
          f"{args.tokens} tokens\n")
    print("| context (synthetic state) | median ms/token | tokens/s | indexer ms/token | indexer share | "
          "other ms/token |")
    print("|---|---|---|---|---|---|")
    # Contexts take turns, a few tokens each round, so a slow spell of this noisy machine hits them all alike.
    contexts = [int(c) for c in args.contexts.split(",")]
    states = {}
    for context in contexts:
        states[context] = model.new_state()
        fill_synthetic(states[context], context)
        decode_times(model, states[context], 2)  # warm-up
    times = {context: [] for context in contexts}
    indexer = dict.fromkeys(contexts, 0.0)
    for _ in range(ROUNDS):
        for context in contexts:
            step_times, indexer_s = decode_times(model, states[context], max(1, args.context_tokens // ROUNDS))
            times[context] += step_times
            indexer[context] += indexer_s
    base = statistics.median(times[contexts[0]])
    for context in contexts:
        med = statistics.median(times[context])
        per_index = indexer[context] / len(times[context])
        print(f"| {context:,} | {med * 1e3:.1f} ({med / base:.2f}x) | {1 / med:.1f} | {per_index * 1e3:.1f} | "
              f"{per_index / statistics.mean(times[context]):.0%} | {(med - per_index) * 1e3:.1f} |")


if __name__ == "__main__":
    main()
