"""Memory per rank for serving Flash and Pro on H200s with tensor + expert parallelism: weights (the exact parameter
inventory of the model built on the meta device at each split), an activation workspace estimate for a chunked-prefill
token budget, the KV budget left and how many 128K / 1M-token sessions fit hot; per-session bytes for the warm and
cold tiers. Meta tensors throughout (nothing allocated): seconds. Run: `python -m bench.plan_memory [--token-budget N]`.
"""

from __future__ import annotations

import argparse
import functools
from dataclasses import dataclass

from bench.kv_bytes import computed_state_bytes
from bench.synthetic_state import fill_synthetic
from kernels.ref.indexer_topk import KEY_BLOCK
from model_worker.config import CSA, ModelConfig, load_config
from model_worker.model import DeepseekV4
from model_worker.numerics import OFFICIAL
from model_worker.parallel import TensorParallel
from model_worker.parallel.shard import is_block_scale, local_range, split_dim
from model_worker.state import SequenceState, StateLayout

# `model.safetensors.index.json` metadata.total_size of the official checkpoints (reference doc §7), MTP included.
CHECKPOINT_BYTES = {"flash": 159_609_485_896, "pro": 864_704_792_696}
HBM_BYTES = 141 * 10**9  # H200 as sold ("141 GB"); nvidia-smi shows ~140 GiB, so this is the conservative reading
USABLE = 0.90  # the rest: CUDA context, NCCL buffers, cuBLAS/Triton workspaces, allocator fragmentation
SESSION_TOKENS = (131072, 1048576)
SLOPE_TOKENS = (8192, 16384)  # whole pages of every stream (an HCA page is 64 entries = 8,192 tokens), so exact
TOKEN_LOG_BYTES = 4  # the session store keeps every token id as int32 (sessions/manifest.py)
TIER_BANDWIDTH = {"local NVMe 10 GB/s": 10e9, "object store 2 GB/s": 2e9, "object store 1 GB/s": 1e9}
# kernels/triton/indexer_topk.py: its int64 rank keys per pass (not imported: Triton is an optional dependency).
SCORES_PER_PASS = 1 << 24
CATEGORIES = ("routed experts", "shared expert", "embed + head", "attention & rest")


@dataclass(frozen=True)
class Plan:
    """One deployment layout. `tp`: the tensor-parallel size of an attention group (heads, vocabulary; see
    parallel/shard.py); `ep`: ranks the routed experts are divided among; `groups`: attention groups (or whole
    replicas)."""

    name: str
    model: str
    tp: int
    ep: int
    groups: int = 1
    implemented: bool = True

    @property
    def gpus(self) -> int:
        return self.tp * self.groups

    def moe_tokens(self, tokens: int) -> int:
        """Tokens reaching a rank's experts when each of `ep / tp` attention groups runs `tokens`."""
        return tokens * self.ep // self.tp


PLANS = (
    Plan("Flash TP4", "flash", 4, 4),
    Plan("Flash TP8", "flash", 8, 8),
    Plan("Pro TP8 (one node, for comparison)", "pro", 8, 8),
    Plan("Pro TP16", "pro", 16, 16),
    Plan("Pro 32 = 2 replicas of TP16", "pro", 16, 16, groups=2),
    Plan("Pro 32 = 2 attention groups of TP16, experts EP32", "pro", 16, 32, groups=2, implemented=False),
)


def build_meta(config: ModelConfig, rank: int = 0, size: int = 1) -> DeepseekV4:
    """The quantized model (official checkpoint formats) as rank `rank` of `size` holds it; meta tensors only."""
    return DeepseekV4(config, quantized=True, tp=TensorParallel(rank, size))


def category(name: str) -> str:
    if ".ffn.experts." in name:
        return "routed experts"
    if ".ffn.shared_experts." in name:
        return "shared expert"
    if name.startswith(("embed.", "head.")):
        return "embed + head"
    return "attention & rest"


def weight_bytes(model: DeepseekV4) -> dict[str, int]:
    """Parameter bytes by category, "mtp" (the MTP layer, also counted in its categories) and "total"."""
    out = dict.fromkeys((*CATEGORIES, "mtp", "total"), 0)
    for name, param in model.named_parameters():
        size = param.numel() * param.element_size()
        out[category(name)] += size
        out["total"] += size
        if name.startswith("mtp."):
            out["mtp"] += size
    return out


def split_problems(config: ModelConfig, size: int) -> list[str]:
    """Parameters the checkpoint split (shard.local_range) rejects at `size` ranks: an FP8 slice that starts inside a
    128-row scale block and crosses into the next."""
    full = dict(build_meta(config).named_parameters())
    problems = []
    for name, param in full.items():
        weight = full.get(name[: -len("scale")] + "weight") if is_block_scale(name) else None
        dim = split_dim(name)
        for rank in range(size):
            try:
                local_range(name, tuple(param.shape), TensorParallel(rank, size),
                            None if weight is None or dim is None else weight.shape[dim])
            except ValueError:
                problems.append(name)
                break
    return problems


def replicated_bytes(model: DeepseekV4) -> int:
    """Bytes of the parameters every rank holds whole (shard.split_dim is None)."""
    return sum(p.numel() * p.element_size() for name, p in model.named_parameters() if split_dim(name) is None)


@functools.cache
def plan_weights(plan: Plan) -> dict[str, int]:
    """Per-rank weight bytes of a plan: rank 0 of the TP split (every rank holds equal shapes), routed experts
    re-divided over `ep` ranks when that differs."""
    config = load_config(plan.model)
    out = weight_bytes(build_meta(config, 0, plan.tp))
    if plan.ep != plan.tp:
        assert config.n_routed_experts % plan.ep == 0, (plan, config.n_routed_experts)
        routed = out["routed experts"]
        out["routed experts"] = routed * plan.tp // plan.ep
        out["total"] += out["routed experts"] - routed
    return out


def state_nbytes(model: DeepseekV4, tokens: int, device: str = "meta") -> int:
    """nbytes() of a state of `model`'s layout filled synthetically to `tokens`. On the meta device (the model's own)
    nothing is computed or allocated; a short fill is quicker on the CPU (meta ops cost more per call)."""
    state = SequenceState(model.layout, device)
    fill_synthetic(state, tokens)
    return state.nbytes()["total"]


@functools.cache
def state_growth(config: ModelConfig) -> tuple[float, int]:
    """(bytes per token, fixed bytes) of one sequence's state: the slope and intercept of nbytes() at two lengths,
    exact at lengths of whole pages. Every rank keeps the whole state, the same at any split
    (tests/bench/test_plan_memory.py), so it is measured once per model."""
    model = build_meta(config)
    n0, n1 = SLOPE_TOKENS
    size0, size1 = state_nbytes(model, n0), state_nbytes(model, n1)
    per_token = (size1 - size0) / (n1 - n0)
    return per_token, round(size0 - per_token * n0)


def session_bytes(config: ModelConfig, tokens: int) -> int:
    """Hot bytes of one committed session, from the measured slope; at whole pages checked against the analytic
    count of bench.kv_bytes."""
    per_token, fixed = state_growth(config)
    total = round(fixed + per_token * tokens)
    if tokens % SLOPE_TOKENS[0] == 0:
        assert total == computed_state_bytes(StateLayout(config, OFFICIAL), tokens)["total"], (tokens, total)
    return total


def workspace(model: DeepseekV4, tokens: int, context: int, logit_rows: int,
              moe_tokens: int | None = None) -> dict[str, int]:
    """Estimated activation bytes of one rank (`model`: that rank's share) for a forward of `tokens` tokens at
    `context` (sizes the indexer's and HCA's per-query buffers): the residual streams live across a block, plus the
    largest of the attention, MoE and logits phases. `moe_tokens`: tokens reaching this rank's experts (both
    attention groups' under EP)."""
    c, t = model.config, tokens
    moe_t = moe_tokens or tokens
    attn = next(block.attn for block in model.layers if block.attn.kind == CSA)
    heads, groups, index_heads = attn.n_local_heads, attn.n_local_groups, attn.indexer.n_local_heads
    shared_hidden = model.layers[0].ffn.shared_experts.w1.weight.shape[0]
    small = 4 * t * c.dim * 4  # normed inputs, FP8 copies, the fp32 all-reduce buffer
    streams = t * c.hc_mult * c.dim * (2 + 2 + 4)  # bf16 in and out of a block, fp32 flattened for mHC
    entries = context // c.csa_ratio
    rank_width = min(entries, max(KEY_BLOCK, SCORES_PER_PASS // t))  # the Triton indexer's key block
    hca_entries = context // max(c.compress_ratios)
    attention = (t * c.q_lora_rank * 2 + t * heads * c.head_dim * (2 + 4 + 2)  # q (bf16), output (fp32), o (bf16)
                 + t * 2 * 2 * c.head_dim * 4  # CSA compressor features: kv and score, 2c each, fp32
                 + t * index_heads * c.index_head_dim * 2 + t * 2 * 2 * c.index_head_dim * 4  # indexer q, features
                 + t * (c.index_topk + rank_width) * 8 + t * c.index_topk * 8  # int64 rank keys, picked ids
                 + t * hca_entries * 8  # HCA: every query's dense list of entry ids (int64)
                 + t * groups * c.o_lora_rank * 2 + small)
    slots = moe_t * c.n_activated_experts  # worst case: every routed slot lands on this rank's experts
    moe = (moe_t * c.n_routed_experts * 4 + slots * c.dim * (2 + 4) + slots * 2 * c.moe_inter_dim * 4
           + t * shared_hidden * 3 * 4 + small)
    logits = logit_rows * (c.vocab_size + model.head.weight.shape[0]) * 4  # this rank's slice, then all (fp32)
    phases = {"streams": streams, "attention": attention, "moe": moe, "logits": logits}
    return {**phases, "total": streams + max(attention, moe, logits)}


def plan_workspace(plan: Plan, tokens: int, context: int, logit_rows: int) -> dict[str, int]:
    model = build_meta(load_config(plan.model), 0, plan.tp)
    return workspace(model, tokens, context, logit_rows, plan.moe_tokens(tokens))


def plan_capacity(plan: Plan, tokens: int, context: int, logit_rows: int) -> dict[str, float]:
    config = load_config(plan.model)
    weights = plan_weights(plan)["total"]
    work = plan_workspace(plan, tokens, context, logit_rows)["total"]
    budget = USABLE * HBM_BYTES - weights - work
    out = {"weights": weights, "workspace": work, "budget": budget}
    for n in SESSION_TOKENS:
        # Every rank of an attention group holds the same states (the K=V head is replicated): the group's capacity is
        # one rank's; the deployment's is that times its groups.
        out[n] = max(int(budget // session_bytes(config, n)), 0) * plan.groups
    return out


def gb(n: float) -> str:
    return f"{n / 1e9:,.2f}"


def header(*columns: str) -> list[str]:
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def checkpoint_table() -> list[str]:
    lines = header("model", "parameters at size 1 (bytes)", "checkpoint total_size (bytes)", "difference",
                   "of which MTP (bytes)")
    for name in CHECKPOINT_BYTES:
        w = weight_bytes(build_meta(load_config(name)))
        lines.append(f"| {name} | {w['total']:,} | {CHECKPOINT_BYTES[name]:,} | "
                     f"{w['total'] - CHECKPOINT_BYTES[name]:+,} | {w['mtp']:,} |")
    return lines


def weights_table() -> list[str]:
    lines = header("plan", "GPUs", *(f"{c} GB" for c in CATEGORIES), "of which MTP GB", "weights / rank GB",
                   "replicated / rank GB")
    for plan in PLANS:
        w = plan_weights(plan)
        replicated = replicated_bytes(build_meta(load_config(plan.model), 0, plan.tp))
        cells = " | ".join(gb(w[c]) for c in CATEGORIES)
        lines.append(f"| {plan.name} | {plan.gpus} | {cells} | {gb(w['mtp'])} | **{gb(w['total'])}** | "
                     f"{gb(replicated)} |")
    return lines


def workspace_table(tokens: int, context: int, logit_rows: int) -> list[str]:
    lines = header("plan", "streams GB", "attention GB", "MoE GB", "logits GB", "workspace GB")
    for plan in PLANS:
        w = plan_workspace(plan, tokens, context, logit_rows)
        lines.append(f"| {plan.name} | {gb(w['streams'])} | {gb(w['attention'])} | {gb(w['moe'])} | "
                     f"{gb(w['logits'])} | **{gb(w['total'])}** |")
    return lines


def capacity_table(tokens: int, context: int, logit_rows: int) -> list[str]:
    lines = header("plan", "GPUs", "code today", "usable / rank GB", "weights GB", "workspace GB",
                   "KV budget / rank GB", "hot 128K sessions", "hot 1M sessions")
    for plan in PLANS:
        cap = plan_capacity(plan, tokens, context, logit_rows)
        problems = split_problems(load_config(plan.model), plan.tp)
        kinds = sorted({name.split(".")[-3] for name in problems})
        status = f"split rejects {len(problems)} FP8 scales ({', '.join(kinds)})" if problems else "split ok"
        status = status if plan.implemented else f"not built; {status}"
        lines.append(f"| {plan.name} | {plan.gpus} | {status} | {gb(USABLE * HBM_BYTES)} | "
                     f"{gb(cap['weights'])} | {gb(cap['workspace'])} | {gb(cap['budget'])} | "
                     f"**{cap[SESSION_TOKENS[0]]:,}** | **{cap[SESSION_TOKENS[1]]:,}** |")
    return lines


def session_table() -> list[str]:
    lines = header("model", "state B/token (slope)", "fixed B/sequence", "tokens", "hot GB", "stored GB",
                   *(f"resume from {tier} s" for tier in TIER_BANDWIDTH))
    for name in CHECKPOINT_BYTES:
        config = load_config(name)
        per_token, fixed = state_growth(config)
        for n in SESSION_TOKENS:
            hot = session_bytes(config, n)
            stored = hot + TOKEN_LOG_BYTES * n
            resume = " | ".join(f"{stored / bandwidth:.2f}" for bandwidth in TIER_BANDWIDTH.values())
            lines.append(f"| {name} | {per_token:,.2f} | {fixed:,} | {n:,} | {gb(hot)} | {gb(stored)} | {resume} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--token-budget", type=int, default=8192, help="tokens per forward (chunked prefill)")
    parser.add_argument("--context", type=int, default=SESSION_TOKENS[-1], help="context the buffers are sized for")
    parser.add_argument("--logit-rows", type=int, default=128, help="logit rows per forward (2 per running "
                        "sequence with speculative decoding, 64 running)")
    args = parser.parse_args(argv)
    sizing = (args.token_budget, args.context, args.logit_rows)
    sections = [
        ("Weights at size 1 against the checkpoint", checkpoint_table()),
        ("Weights per rank", weights_table()),
        (f"Activation workspace per rank (estimate: {args.token_budget:,} tokens per forward, buffers sized for "
         f"{args.context:,}-token context, {args.logit_rows} logit rows)", workspace_table(*sizing)),
        (f"Hot capacity (H200 {HBM_BYTES / 1e9:.0f} GB x {USABLE:.0%} usable; a session's state is whole on every "
         f"rank of its attention group)", capacity_table(*sizing)),
        ("Per-session state (official numerics) and warm/cold resume", session_table()),
    ]
    for title, lines in sections:
        print(f"### {title}\n")
        print("\n".join(lines) + "\n")
    print("GB = 10^9 bytes. Stored = hot state + the int32 token log; resume = stored bytes / tier bandwidth "
          "(estimate; no prefill).")


if __name__ == "__main__":
    main()
