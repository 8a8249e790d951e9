"""Side by side with transformers' DeepseekV4ForCausalLM on the same `tiny`-shaped weights, in one run.

Ours: official numerics (FP8 linears, packed FP4 experts, FP8/FP4 state). Theirs: the same weights dequantized, in
`--hf-dtype` (default float32, its fastest on CPU). Both prefill through their caches in chunks of <= 2K tokens under
the same thread policy. Then both decode in alternating rounds (ours, theirs under one thread, theirs under all), so
the machine's drift falls on both alike. Ours decodes under its policy (one torch thread; its CPU kernels split the
output head and long index scans across cores); of transformers' two thread counts, the faster median counts.
Reported: prefill tokens/s, decode tokens/s at each context for batch 1 and 8, and per-sequence KV bytes (nbytes of
every per-sequence state tensor, partial pages included, vs nbytes of every cache tensor, shared storage once), both
after the first decode step (transformers' prefill leaves transient buffers in its cache: ~6x the steady size).

    python -m bench.vs_transformers [--contexts 8192,32768] [--batches 1,8] [--decode-tokens 16] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from transformers import DeepseekV4Config, DeepseekV4ForCausalLM
from transformers.cache_utils import DynamicCache

import kernels
from model_worker.checkpoint import dequantize_state_dict
from model_worker.checkpoint.names import to_hf_name
from model_worker.config import TINY, to_hf_dict
from model_worker.engine.loading import load_model
from model_worker.engine.threads import intra_op_threads, threads_for
from model_worker.model import ForwardBatch

CHUNK = 2048


def hf_model(ours, dtype: torch.dtype) -> DeepseekV4ForCausalLM:
    """transformers' model holding our weights, dequantized."""
    dense = {}
    for name, tensor in dequantize_state_dict(ours.state_dict(), dtype).items():
        hf_name = to_hf_name(name)
        if hf_name is not None:
            dense[hf_name] = tensor.to(dtype) if tensor.is_floating_point() else tensor
    config = {k: v for k, v in to_hf_dict(TINY).items() if k not in ("architectures", "model_type")}
    model = DeepseekV4ForCausalLM(DeepseekV4Config(**config)).to(dtype).eval()
    missing, unexpected = model.load_state_dict(dense, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    return model


def cache_bytes(cache: DynamicCache) -> int:
    seen, total = set(), 0

    def visit(value):
        nonlocal total
        if isinstance(value, torch.Tensor):
            key = (value.untyped_storage().data_ptr(), value.untyped_storage().nbytes())
            if key not in seen:
                seen.add(key)
                total += value.untyped_storage().nbytes()
        elif isinstance(value, dict):
            for v in value.values():
                visit(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                visit(v)

    for layer in cache.layers:
        for value in vars(layer).values():
            visit(value)
    return total


def prefill_hf(model, ids: torch.Tensor) -> tuple[float, Callable[[int], float], int]:
    """transformers' prefill materializes [batch, chunk, heads, entries] index scores; where that does not fit in
    memory, halve the chunk (and say so) rather than drop the row. Returns (seconds, decode step, chunk)."""
    chunk = CHUNK
    while True:
        try:
            return (*_prefill_hf(model, ids, chunk), chunk)
        except RuntimeError as exc:
            if "can't allocate memory" not in str(exc) or chunk <= 256:
                raise
            chunk //= 2


@torch.no_grad()
def _prefill_hf(model, ids: torch.Tensor, chunk: int) -> tuple[float, Callable[[int], float]]:
    cache = DynamicCache(config=model.config)
    start = time.perf_counter()
    for first in range(0, ids.shape[1], chunk):
        with threads_for(ids[:, first : first + chunk].numel()):
            out = model(input_ids=ids[:, first : first + chunk], past_key_values=cache, use_cache=True,
                        logits_to_keep=1)
    prefill = time.perf_counter() - start
    token = out.logits[:, -1].argmax(-1, keepdim=True)

    @torch.no_grad()
    def step(threads: int) -> float:
        nonlocal token
        start = time.perf_counter()
        with intra_op_threads(threads):
            out = model(input_ids=token, past_key_values=cache, use_cache=True)
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        elapsed = time.perf_counter() - start
        if step.kv_bytes is None:  # after one decode step (prefill leaves transient buffers), as for ours
            step.kv_bytes = cache_bytes(cache) // ids.shape[0]
        return elapsed

    step.kv_bytes = None
    return prefill, step


@torch.no_grad()
def prefill_ours(model, ids: torch.Tensor) -> tuple[float, Callable[[], float]]:
    """Returns (seconds, decode step); the step records KV bytes per sequence after its first call."""
    states = [model.new_state() for _ in range(ids.shape[0])]
    start = time.perf_counter()
    for first in range(0, ids.shape[1], CHUNK):
        chunk = ids[:, first : first + CHUNK]
        with threads_for(chunk.numel()):
            out = model(ForwardBatch(chunk.reshape(-1), [chunk.shape[1]] * len(states), states))
        for state in states:
            state.commit()
    prefill = time.perf_counter() - start
    tokens = kernels.argmax(out.logits)  # the engine's greedy pick

    @torch.no_grad()
    def step() -> float:
        nonlocal tokens
        start = time.perf_counter()
        with threads_for(len(states)):
            out = model(ForwardBatch(tokens, [1] * len(states), states))
        for state in states:
            state.commit()
        tokens = kernels.argmax(out.logits)
        elapsed = time.perf_counter() - start
        if step.kv_bytes is None:
            step.kv_bytes = states[0].nbytes()["total"]
        return elapsed

    step.kv_bytes = None
    return prefill, step


def interleaved_decode(ours: Callable[[], float], theirs: Callable[[int], float] | None, tokens: int,
                       rounds: int) -> tuple[float, float | None]:
    """Median seconds per decode step of each side, measured in alternating rounds so that the machine's drift
    (+-40% over minutes here) falls on both alike. transformers runs under one thread and under all in each round;
    its faster median counts (our engine's thread policy is tuned for it, theirs is not)."""
    times: dict[object, list[float]] = {"ours": [], 1: [], torch.get_num_threads(): []}
    for _ in range(rounds):
        times["ours"] += [ours() for _ in range(tokens)]
        if theirs is not None:
            for threads in (1, torch.get_num_threads()):
                times[threads] += [theirs(threads) for _ in range(tokens)]
    hf = [statistics.median(v) for k, v in times.items() if k != "ours" and v]
    return statistics.median(times["ours"]), (min(hf) if hf else None)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contexts", default="8192,32768")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--decode-tokens", type=int, default=16, help="decode steps per side per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--hf-dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--ours-only", action="store_true",
                        help="skip transformers (e.g. where it runs out of memory: 32K x 8 needs more than 24 GiB)")
    args = parser.parse_args()
    ours = load_model(None, "tiny", numerics="official")
    theirs = None if args.ours_only else hf_model(ours, getattr(torch, args.hf_dtype))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; transformers in {args.hf_dtype}\n")
    print("| context | batch | prefill tok/s ours | theirs | decode tok/s ours | theirs | decode speed-up | "
          "KV bytes/seq ours | theirs | KV ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    gen = torch.Generator().manual_seed(0)
    for context in (int(c) for c in args.contexts.split(",")):
        for batch in (int(b) for b in args.batches.split(",")):
            ids = torch.randint(0, 100000, (batch, context), generator=gen)
            p_ours, step_ours = prefill_ours(ours, ids)
            n = batch * context
            if args.ours_only:
                d_ours, _ = interleaved_decode(step_ours, None, args.decode_tokens, args.rounds)
                kv_ours = step_ours.kv_bytes
                print(f"| {context:,} | {batch} | {n / p_ours:.0f} | - | {batch / d_ours:.1f} | - | - | "
                      f"{kv_ours:,} | - | - |", flush=True)
                continue
            p_hf, step_hf, hf_chunk = prefill_hf(theirs, ids)
            d_ours, d_hf = interleaved_decode(step_ours, step_hf, args.decode_tokens, args.rounds)
            kv_ours, kv_hf = step_ours.kv_bytes, step_hf.kv_bytes
            note = "" if hf_chunk == CHUNK else f" ({hf_chunk}-token chunks: {CHUNK} ran out of memory)"
            print(f"| {context:,} | {batch} | {n / p_ours:.0f} | {n / p_hf:.0f}{note} | {batch / d_ours:.1f} | "
                  f"{batch / d_hf:.1f} | {d_hf / d_ours:.1f}x | {kv_ours:,} | {kv_hf:,} | {kv_ours / kv_hf:.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
