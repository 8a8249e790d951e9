"""Side by side with transformers' DeepseekV4ForCausalLM on the same `tiny`-shaped weights, in one run.

Ours: official numerics (FP8 linears, packed FP4 experts, FP8/FP4 state). Theirs: the same weights dequantized, in
`--hf-dtype` (default float32, its fastest on CPU). Both prefill through their caches in chunks of <= 2K tokens under
the same thread policy. Ours decodes under its policy (one torch thread; its CPU kernels split the output head and
long index scans across cores); transformers decodes under one thread and under all, and its faster median counts.
Reported: prefill tokens/s, decode tokens/s at each context for batch 1 and 8, and per-sequence KV bytes (nbytes of
every per-sequence state tensor, partial pages included, vs nbytes of every cache tensor, shared storage once).

    python -m bench.vs_transformers [--contexts 8192,32768] [--batches 1,8] [--decode-tokens 16]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import DeepseekV4Config, DeepseekV4ForCausalLM
from transformers.cache_utils import DynamicCache

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


def run_hf(model, ids: torch.Tensor, decode_tokens: int) -> tuple[float, float, int, int]:
    """transformers' prefill materializes [batch, chunk, heads, entries] index scores; where that does not fit in
    memory, halve the chunk (and say so) rather than drop the row."""
    chunk = CHUNK
    while True:
        try:
            return (*_run_hf(model, ids, decode_tokens, chunk), chunk)
        except RuntimeError as exc:
            if "can't allocate memory" not in str(exc) or chunk <= 256:
                raise
            chunk //= 2


@torch.no_grad()
def _run_hf(model, ids: torch.Tensor, decode_tokens: int, chunk: int) -> tuple[float, float, int]:
    cache = DynamicCache(config=model.config)
    start = time.perf_counter()
    for first in range(0, ids.shape[1], chunk):
        with threads_for(ids[:, first : first + chunk].numel()):
            out = model(input_ids=ids[:, first : first + chunk], past_key_values=cache, use_cache=True,
                        logits_to_keep=1)
    prefill = time.perf_counter() - start
    token, medians, kv_bytes = out.logits[:, -1].argmax(-1, keepdim=True), [], []
    # Our engine's thread policy is tuned for it; transformers decodes under both thread counts and keeps its faster.
    for threads in (1, torch.get_num_threads()):
        times = []
        for _ in range(decode_tokens):
            start = time.perf_counter()
            with intra_op_threads(threads):
                out = model(input_ids=token, past_key_values=cache, use_cache=True)
            token = out.logits[:, -1].argmax(-1, keepdim=True)
            times.append(time.perf_counter() - start)
        medians.append(statistics.median(times))
        kv_bytes.append(cache_bytes(cache) // ids.shape[0])
    return prefill, min(medians), kv_bytes[0]  # cache bytes at the same length as ours


def run_ours(model, ids: torch.Tensor, decode_tokens: int) -> tuple[float, float, int]:
    states = [model.new_state() for _ in range(ids.shape[0])]
    start = time.perf_counter()
    for first in range(0, ids.shape[1], CHUNK):
        chunk = ids[:, first : first + CHUNK]
        with threads_for(chunk.numel()):
            out = model(ForwardBatch(chunk.reshape(-1), [chunk.shape[1]] * len(states), states))
        for state in states:
            state.commit()
    prefill = time.perf_counter() - start
    tokens, times = out.logits.argmax(-1), []
    for _ in range(decode_tokens):
        start = time.perf_counter()
        with threads_for(len(states)):
            out = model(ForwardBatch(tokens, [1] * len(states), states))
        for state in states:
            state.commit()
        tokens = out.logits.argmax(-1)
        times.append(time.perf_counter() - start)
    return prefill, statistics.median(times), states[0].nbytes()["total"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contexts", default="8192,32768")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--decode-tokens", type=int, default=16)
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
            p_ours, d_ours, kv_ours = run_ours(ours, ids, args.decode_tokens)
            n = batch * context
            if args.ours_only:
                print(f"| {context:,} | {batch} | {n / p_ours:.0f} | - | {batch / d_ours:.1f} | - | - | "
                      f"{kv_ours:,} | - | - |", flush=True)
                continue
            p_hf, d_hf, kv_hf, hf_chunk = run_hf(theirs, ids, args.decode_tokens)
            note = "" if hf_chunk == CHUNK else f" ({hf_chunk}-token chunks: {CHUNK} ran out of memory)"
            print(f"| {context:,} | {batch} | {n / p_ours:.0f} | {n / p_hf:.0f}{note} | {batch / d_ours:.1f} | "
                  f"{batch / d_hf:.1f} | {d_hf / d_ours:.1f}x | {kv_ours:,} | {kv_hf:,} | {kv_ours / kv_hf:.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
