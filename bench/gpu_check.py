"""GPU check: every Triton kernel against its twin, timed against measured floors, and decode of a Flash-shaped slice.

One call, a few minutes, on the GPU image (Python 3.12, torch 2.11, triton 3.6, no network): imports only torch,
triton, numpy, safetensors and this repository.

1. Versions and the card; the measured floors: device-to-device copy bandwidth and a bf16 GEMM's TFLOP/s.
2. Each kernel at the pinned shapes: its relative error against the twin on the same inputs, its median time
   (CUDA events), the bytes it must move and the FLOPs it must do, and the fraction of the floor it reaches
   (floor time = max(bytes / bandwidth, FLOPs / compute) over the measured time).
   Shapes: FP4 MoE decode = 128 tokens routed over all 256 experts; indexer over 256K compressed entries; sparse
   attention with top-512 + window 128 (128 queries, each with its own entries); Flash widths throughout.
3. Decode tokens/s of a Flash-shaped slice (window, CSA and HCA layers at full width, random weights) at 4K, 128K
   and 1M tokens of synthetically filled state.

    python -m bench.gpu_check [--out FILE.md]      (on a GPU)
    python -m bench.gpu_check --smoke               (tiny shapes on CPU under TRITON_INTERPRET=1: the script runs)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import time

import torch

SMOKE = "--smoke" in sys.argv
if SMOKE:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import triton  # noqa: E402

from bench.synthetic_state import fill_synthetic  # noqa: E402
from kernels.ref import fp4_experts, fp8_linear, indexer_topk, sparse_attention  # noqa: E402
from kernels.ref.kv_codec import encode_index_keys, encode_kv  # noqa: E402
from kernels.triton import fp4_experts as t_fp4_experts  # noqa: E402
from kernels.triton import fp8_linear as t_fp8_linear  # noqa: E402
from kernels.triton import indexer_topk as t_indexer_topk  # noqa: E402
from kernels.triton import sparse_attention as t_sparse_attention  # noqa: E402
from model_worker.config import FLASH, ModelConfig  # noqa: E402
from model_worker.model import DeepseekV4, ForwardBatch  # noqa: E402
from model_worker.numerics import OFFICIAL  # noqa: E402

DEVICE = "cpu" if SMOKE else "cuda"


def timed(fn, repeats: int = 20) -> float:
    """Median seconds of fn() after a warm-up, with CUDA events (one plain run on CPU: the smoke run only checks
    that the script works)."""
    if DEVICE == "cpu":
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def floors() -> tuple[float, float]:
    """(bytes/s of a device copy counting read + write, FLOP/s of a bf16 GEMM)."""
    n = 1 << (20 if SMOKE else 28)
    src, dst = torch.randn(n, device=DEVICE), torch.empty(n, device=DEVICE)
    bandwidth = 2 * src.nbytes / timed(lambda: dst.copy_(src))
    size = 256 if SMOKE else 8192
    a = torch.randn(size, size, device=DEVICE, dtype=torch.bfloat16)
    return bandwidth, 2 * size**3 / timed(lambda: a @ a)


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.float() - want.float()).norm() / want.float().norm().clamp_min(1e-30)).item()


def fp4_weights(experts: int, rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
    packed = torch.randint(0, 256, (experts, rows, cols // 2), dtype=torch.uint8, device=DEVICE)
    return packed, torch.full((experts, rows, cols // 32), 121, dtype=torch.uint8, device=DEVICE)  # scale 2^-6


def case_fp4_moe(c) -> dict:
    tokens = 8 if SMOKE else 128
    x = torch.randn(tokens, c.dim, device=DEVICE).to(torch.bfloat16)
    ids = (torch.arange(tokens * c.n_activated_experts, device=DEVICE) % c.n_routed_experts).view(tokens, -1)
    weights = torch.rand(ids.shape, device=DEVICE)
    w13, s13 = fp4_weights(c.n_routed_experts, 2 * c.moe_inter_dim, c.dim)
    w2, s2 = fp4_weights(c.n_routed_experts, c.dim, c.moe_inter_dim)
    args = (x, ids, weights, w13, s13, w2, s2, c.swiglu_limit, True)
    slots = ids.numel()
    return dict(name=f"FP4 MoE, {tokens} tokens over {c.n_routed_experts} experts", kernel=t_fp4_experts.fp4_expert_ffn,
                twin=fp4_experts.fp4_expert_ffn, args=args,
                bytes=sum(t.nbytes for t in (x, w13, s13, w2, s2)) + tokens * c.dim * 4,
                flops=2 * slots * 3 * c.dim * c.moe_inter_dim)


def case_fp8_linear(c, tokens: int) -> dict:
    n, k = c.n_heads * c.head_dim, c.q_lora_rank  # wq_b, the largest attention projection
    x = torch.randn(tokens, k, device=DEVICE).to(torch.bfloat16)
    w = (torch.randn(n, k, device=DEVICE) * 0.05).to(torch.float8_e4m3fn)
    s = torch.full((-(-n // 128), -(-k // 128)), 127, dtype=torch.uint8, device=DEVICE)
    return dict(name=f"FP8 linear {k}->{n}, {tokens} tokens", kernel=t_fp8_linear.fp8_linear,
                twin=fp8_linear.fp8_linear, args=(x, w, s, True, torch.float32),
                bytes=w.nbytes + s.nbytes + x.nbytes + tokens * n * 4, flops=2 * tokens * n * k)


def case_indexer(c) -> dict:
    entries = 4096 if SMOKE else 262144
    q = torch.randn(1, c.index_n_heads, c.index_head_dim, device=DEVICE).to(torch.bfloat16)
    keys = encode_index_keys(torch.randn(entries, c.index_head_dim, device=DEVICE))
    w = torch.randn(1, c.index_n_heads, device=DEVICE)
    visible = torch.tensor([entries], device=DEVICE)
    return dict(name=f"indexer top-{c.index_topk} over {entries:,} entries", kernel=t_indexer_topk.indexer_topk,
                twin=indexer_topk.indexer_topk, args=(q, w, keys, visible, c.index_topk, torch.bfloat16),
                bytes=keys.nbytes, flops=2 * entries * c.index_n_heads * c.index_head_dim, exact=True)


def case_sparse_attention(c) -> dict:
    """Over stored entries (FP8 nope + bf16 rope dims), as the engine reads its window log and pages."""
    queries, heads = (4, 8) if SMOKE else (128, c.n_heads)
    window, top = c.window_size, c.index_topk
    q = torch.randn(queries, heads, c.head_dim, device=DEVICE).to(torch.bfloat16)
    window_kv = encode_kv(torch.randn(queries * window, c.head_dim, device=DEVICE), c.rope_head_dim)
    comp_kv = encode_kv(torch.randn(queries * top, c.head_dim, device=DEVICE), c.rope_head_dim)
    window_idx = torch.arange(queries * window, device=DEVICE).view(queries, window)
    comp_idx = torch.arange(queries * top, device=DEVICE).view(queries, top)
    sinks = torch.randn(heads, device=DEVICE)
    args = (q, window_kv, window_idx, comp_kv, comp_idx, sinks, c.head_dim**-0.5, c.rope_head_dim)
    return dict(name=f"sparse attention, top-{top} + window {window} stored entries, {queries} queries x {heads} "
                     "heads", kernel=t_sparse_attention.sparse_attention, twin=sparse_attention.sparse_attention,
                args=args, bytes=window_kv.nbytes + comp_kv.nbytes + q.nbytes + queries * heads * c.head_dim * 4,
                flops=4 * queries * heads * (window + top) * c.head_dim)


def check_kernel(case: dict, bandwidth: float, compute: float) -> str:
    got, want = case["kernel"](*case["args"]), case["twin"](*case["args"])
    if case.get("exact"):  # index sets: the fraction of the twin's picks the kernel also picked
        agree = sum(len(set(g.tolist()) & set(w.tolist())) for g, w in zip(got, want)) / want.numel()
        error = f"{agree:.4f} of picks agree"
    else:
        error = f"{rel_err(got, want):.1e}"
    seconds = timed(lambda: case["kernel"](*case["args"]))
    floor = max(case["bytes"] / bandwidth, case["flops"] / compute)
    return (f"| {case['name']} | {error} | {seconds * 1e6:,.1f} | {case['bytes'] / seconds / 1e9:,.1f} | "
            f"{case['flops'] / seconds / 1e12:,.2f} | {floor / seconds:.0%} |")


def slice_config() -> ModelConfig:
    """Flash at full width with one window-only, one CSA and one HCA layer (much narrower for --smoke)."""
    config = FLASH if not SMOKE else dataclasses.replace(FLASH, dim=256, moe_inter_dim=128, n_heads=8, head_dim=128,
                                                            q_lora_rank=128, o_lora_rank=64, index_n_heads=8,
                                                            n_routed_experts=8, vocab_size=1024, index_topk=32)
    return dataclasses.replace(config, n_layers=3, n_mtp_layers=0, n_hash_layers=1, compress_ratios=(0, 4, 128))


def flash_slice(config: ModelConfig) -> DeepseekV4:
    """The slice with random weights made on the device (drawing Flash's experts on the host would take minutes)."""
    model = DeepseekV4(config, quantized=True, numerics=OFFICIAL)
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    weights = {}
    for name, param in model.named_parameters():
        shape, dtype = param.shape, param.dtype
        if name.endswith("tid2eid"):
            weights[name] = torch.randint(0, config.n_routed_experts, shape, device=DEVICE, generator=gen)
        elif dtype == torch.uint8:  # packed FP4 codes, or ue8m0 scales of 2^-6
            is_scale = "scale" in name
            weights[name] = (torch.full(shape, 121, dtype=dtype, device=DEVICE) if is_scale
                             else torch.randint(0, 256, shape, dtype=dtype, device=DEVICE, generator=gen))
        elif name.endswith(("norm.weight", "_scale")) and dtype != torch.uint8:
            weights[name] = torch.ones(shape, dtype=dtype, device=DEVICE)
        elif name.endswith(("attn_sink", ".bias", ".ape", "_base")):
            weights[name] = torch.zeros(shape, dtype=dtype, device=DEVICE)
        elif dtype == torch.float8_e4m3fn:
            weights[name] = (torch.randn(shape, device=DEVICE, generator=gen) * 0.05).to(dtype)
        else:
            weights[name] = (torch.randn(shape, device=DEVICE, generator=gen) * 0.02).to(dtype)
    model.load_state_dict(weights, assign=True, strict=True)
    return model.to(DEVICE)


def decode_rates(model: DeepseekV4, contexts: list[int], steps: int) -> list[str]:
    rows = []
    for context in contexts:
        state = model.new_state()
        fill_synthetic(state, context)

        def step() -> None:
            model(ForwardBatch.single([1], state))
            state.commit()

        seconds = timed(step, repeats=steps)
        rows.append(f"| {context:,} | {seconds * 1e3:.2f} | {1 / seconds:,.1f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "gpu_check.md"))
    args = parser.parse_args()
    card = "CPU (smoke run, Triton interpreter)" if SMOKE else torch.cuda.get_device_name()
    lines = [f"Date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {card}; Python {platform.python_version()}, "
             f"torch {torch.__version__}, triton {triton.__version__}", ""]
    bandwidth, compute = floors()
    lines += [f"Measured floors: copy bandwidth {bandwidth / 1e9:,.0f} GB/s, bf16 GEMM {compute / 1e12:,.1f} TFLOP/s",
              "", "| kernel | error vs twin | time us | GB/s | TFLOP/s | of floor |", "|---|---|---|---|---|---|"]
    c = slice_config()
    cases = [case_fp4_moe(c), case_fp8_linear(c, 1), case_fp8_linear(c, 16 if SMOKE else 4096), case_indexer(c),
             case_sparse_attention(c)]
    for case in cases:
        lines.append(check_kernel(case, bandwidth, compute))
        print(lines[-1], flush=True)
    with torch.no_grad():
        model = flash_slice(c)
        lines += ["", "Flash-shaped slice (window, CSA, HCA layers at full width), batch 1, synthetic state:", "",
                  "| context | ms/token | tokens/s |", "|---|---|---|"]
        lines += decode_rates(model, [512, 1024] if SMOKE else [4096, 131072, 1048576], steps=3 if SMOKE else 20)
    text = "\n".join(lines) + "\n"
    print(text)
    with open(args.out, "w") as handle:
        handle.write(text)


if __name__ == "__main__":
    main()
