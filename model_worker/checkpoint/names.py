"""Tensor names: ours are the official checkpoint names, except that routed experts are stacked per layer
(`ffn.experts.w13` = every expert's w1 rows then w3 rows, `ffn.experts.w2`, and their `_scale`s).

`to_hf_name` maps one of our (non-expert) names to the transformers `DeepseekV4ForCausalLM` name; experts map
whole: our w13 is HF's `gate_up_proj` [E, 2I, D] and our w2 its `down_proj` [E, D, I].
"""

from __future__ import annotations

import re

# Longest-first substring renames from our (official) names to transformers names; order matters.
_HF_RENAMES = (
    (".attn.indexer.compressor.wkv.", ".self_attn.compressor.indexer.kv_proj."),
    (".attn.indexer.compressor.wgate.", ".self_attn.compressor.indexer.gate_proj."),
    (".attn.indexer.compressor.ape", ".self_attn.compressor.indexer.position_bias"),
    (".attn.indexer.compressor.norm.", ".self_attn.compressor.indexer.kv_norm."),
    (".attn.indexer.weights_proj.", ".self_attn.compressor.indexer.scorer.weights_proj."),
    (".attn.indexer.wq_b.", ".self_attn.compressor.indexer.q_b_proj."),
    (".attn.compressor.wkv.", ".self_attn.compressor.kv_proj."),
    (".attn.compressor.wgate.", ".self_attn.compressor.gate_proj."),
    (".attn.compressor.ape", ".self_attn.compressor.position_bias"),
    (".attn.compressor.norm.", ".self_attn.compressor.kv_norm."),
    (".attn.wq_a.", ".self_attn.q_a_proj."),
    (".attn.q_norm.", ".self_attn.q_a_norm."),
    (".attn.wq_b.", ".self_attn.q_b_proj."),
    (".attn.wkv.", ".self_attn.kv_proj."),
    (".attn.kv_norm.", ".self_attn.kv_norm."),
    (".attn.wo_a.", ".self_attn.o_a_proj."),
    (".attn.wo_b.", ".self_attn.o_b_proj."),
    (".attn.attn_sink", ".self_attn.sinks"),
    (".ffn.gate.bias", ".mlp.gate.e_score_correction_bias"),
    (".ffn.gate.", ".mlp.gate."),
    (".ffn.shared_experts.w1.", ".mlp.shared_experts.gate_proj."),
    (".ffn.shared_experts.w3.", ".mlp.shared_experts.up_proj."),
    (".ffn.shared_experts.w2.", ".mlp.shared_experts.down_proj."),
    (".ffn.experts.w13", ".mlp.experts.gate_up_proj"),
    (".ffn.experts.w2", ".mlp.experts.down_proj"),
    (".attn_norm.", ".input_layernorm."),
    (".ffn_norm.", ".post_attention_layernorm."),
    (".hc_attn_fn", ".attn_hc.fn"), (".hc_attn_base", ".attn_hc.base"), (".hc_attn_scale", ".attn_hc.scale"),
    (".hc_ffn_fn", ".ffn_hc.fn"), (".hc_ffn_base", ".ffn_hc.base"), (".hc_ffn_scale", ".ffn_hc.scale"),
)
_HF_GLOBALS = {
    "embed.weight": "model.embed_tokens.weight", "head.weight": "lm_head.weight", "norm.weight": "model.norm.weight",
    "hc_head_fn": "model.hc_head.hc_fn", "hc_head_base": "model.hc_head.hc_base",
    "hc_head_scale": "model.hc_head.hc_scale",
}
_EXPERT = re.compile(
    r"^(?P<prefix>(?:mtp\.\d+|layers\.\d+)\.ffn\.experts)\.(?P<expert>\d+)\.(?P<proj>w[123])\.(?P<kind>weight|scale)$"
)


def to_hf_name(name: str) -> str | None:
    """Our name -> transformers name; None for tensors transformers does not have (MTP)."""
    if name.startswith("mtp."):
        return None
    if name in _HF_GLOBALS:
        return _HF_GLOBALS[name]
    out = "model." + name
    for ours, theirs in _HF_RENAMES:
        if ours in out:
            return out.replace(ours, theirs, 1)
    raise KeyError(f"no transformers name for {name!r}")


def parse_expert_name(name: str) -> tuple[str, int, str, str] | None:
    """Official per-expert name -> (stacked prefix, expert id, 'w1'|'w2'|'w3', 'weight'|'scale'), else None."""
    match = _EXPERT.match(name)
    if match is None:
        return None
    return match["prefix"], int(match["expert"]), match["proj"], match["kind"]
