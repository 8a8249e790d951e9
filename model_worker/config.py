"""Model configuration: one frozen dataclass with the official `inference/config.json` field names.

Named configs (`flash`, `pro`, `tiny`) and readers for the official and the transformers `config.json` layouts.
Unknown fields are an error: a silently ignored field is how a wrong model gets served.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WINDOW, CSA, HCA = "window", "csa", "hca"


class ConfigError(ValueError):
    """A configuration that names an unknown field, a bad value or an unknown named config."""


@dataclass(frozen=True)
class ModelConfig:
    """DeepSeek-V4 architecture. `compress_ratios` has one entry per main layer plus one per MTP layer."""

    vocab_size: int = 129280
    dim: int = 4096
    moe_inter_dim: int = 2048
    n_layers: int = 43
    n_hash_layers: int = 3
    n_mtp_layers: int = 1
    n_heads: int = 64
    n_routed_experts: int = 256
    n_shared_experts: int = 1
    n_activated_experts: int = 6
    score_func: str = "sqrtsoftplus"
    route_scale: float = 1.5
    swiglu_limit: float = 10.0
    q_lora_rank: int = 1024
    head_dim: int = 512
    rope_head_dim: int = 64
    o_groups: int = 8
    o_lora_rank: int = 1024
    window_size: int = 128
    original_seq_len: int = 65536
    rope_theta: float = 10000.0
    rope_factor: float = 16.0
    beta_fast: int = 32
    beta_slow: int = 1
    compress_rope_theta: float = 160000.0
    index_n_heads: int = 64
    index_head_dim: int = 128
    index_topk: int = 512
    hc_mult: int = 4
    hc_sinkhorn_iters: int = 20
    hc_eps: float = 1e-6
    norm_eps: float = 1e-6
    compress_ratios: tuple[int, ...] = (0, 0) + (4, 128) * 20 + (4, 0)
    csa_ratio: int = 4
    dtype: str = "fp8"
    expert_dtype: str = "fp4"
    scale_fmt: str = "ue8m0"
    max_seq_len: int = 1 << 20
    bos_token_id: int = 0
    eos_token_id: int = 1

    def __post_init__(self) -> None:
        expected = self.n_layers + self.n_mtp_layers
        if len(self.compress_ratios) != expected:
            raise ConfigError(f"compress_ratios has {len(self.compress_ratios)} entries, expected "
                              f"n_layers + n_mtp_layers = {expected}")
        if any(r < 0 for r in self.compress_ratios):
            raise ConfigError("compress_ratios must be >= 0")
        if self.n_heads % self.o_groups:
            raise ConfigError(f"n_heads ({self.n_heads}) must be divisible by o_groups ({self.o_groups})")
        if self.rope_head_dim > self.head_dim or self.rope_head_dim % 2:
            raise ConfigError("rope_head_dim must be even and <= head_dim")
        if self.index_head_dim < self.rope_head_dim:
            raise ConfigError("index_head_dim must be >= rope_head_dim (indexer queries and keys carry RoPE)")
        if self.index_head_dim & (self.index_head_dim - 1):
            raise ConfigError("index_head_dim must be a power of two (Hadamard rotation)")
        if self.n_activated_experts > self.n_routed_experts:
            raise ConfigError("n_activated_experts must be <= n_routed_experts")
        if self.n_mtp_layers not in (0, 1):
            raise ConfigError("DeepSeek-V4 has at most one MTP layer")
        if self.n_shared_experts != 1:
            raise ConfigError("DeepSeek-V4 has exactly one shared expert")
        if self.score_func not in ("sqrtsoftplus", "softmax", "sigmoid"):
            raise ConfigError(f"unknown score_func {self.score_func!r}")
        if self.dtype not in ("fp8", "bf16") or self.expert_dtype not in ("fp4", "fp8", "bf16"):
            raise ConfigError(f"unsupported weight dtypes dtype={self.dtype!r} expert_dtype={self.expert_dtype!r}")

    def layer_type(self, layer_id: int) -> str:
        """Attention kind of a layer (main layers first, then MTP layers)."""
        ratio = self.compress_ratios[layer_id]
        if ratio == 0:
            return WINDOW
        return CSA if ratio == self.csa_ratio else HCA

    @property
    def layer_types(self) -> tuple[str, ...]:
        return tuple(self.layer_type(i) for i in range(self.n_layers + self.n_mtp_layers))

    def to_official_dict(self) -> dict[str, Any]:
        """Canonical JSON form (the official `inference/config.json` field names)."""
        out = dataclasses.asdict(self)
        out["compress_ratios"] = list(self.compress_ratios)
        return out

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


FLASH = ModelConfig()
PRO = ModelConfig(
    dim=7168, moe_inter_dim=3072, n_layers=61, n_heads=128, n_routed_experts=384, route_scale=2.5,
    q_lora_rank=1536, o_groups=16, index_topk=1024, compress_ratios=(128, 128) + (4, 128) * 29 + (4, 0),
)
# The embedded default: every layer kind (window-only, CSA, HCA), hash-routed layers, mHC, MoE and MTP at a size a
# laptop decodes quickly, splitting over 1, 2 or 4 tensor-parallel ranks. Real vocabulary so the official tokenizer and
# chat encoding work end to end.
TINY = ModelConfig(
    dim=256, moe_inter_dim=128, n_layers=4, n_hash_layers=2, n_heads=4, n_routed_experts=8, n_activated_experts=2,
    q_lora_rank=128, head_dim=128, o_groups=4, o_lora_rank=64, index_n_heads=8, index_head_dim=128, index_topk=32,
    compress_ratios=(0, 4, 128, 4, 0),
)
# `tiny` with the published head dimension 512: the model trained here (training/) and the one llama.cpp can run
# for side-by-side benchmarks (its DeepSeek-V4 graph assumes 512; on `tiny` it dies at start-up).
AGENT_SMALL = dataclasses.replace(TINY, head_dim=512)
NAMED_CONFIGS = {"flash": FLASH, "pro": PRO, "tiny": TINY, "agent-small": AGENT_SMALL}

_OFFICIAL_FIELDS = {f.name for f in dataclasses.fields(ModelConfig)}
# Official fields we accept but which do not change the math of one forward pass.
_OFFICIAL_IGNORED = {"max_batch_size", "scale_dtype", "score_func_default", "n_dense_layers"}

# transformers `DeepseekV4Config` names -> ours.
_HF_RENAMES = {
    "hidden_size": "dim", "moe_intermediate_size": "moe_inter_dim", "num_hidden_layers": "n_layers",
    "num_attention_heads": "n_heads", "num_experts_per_tok": "n_activated_experts", "scoring_func": "score_func",
    "routed_scaling_factor": "route_scale", "qk_rope_head_dim": "rope_head_dim", "sliding_window": "window_size",
    "num_nextn_predict_layers": "n_mtp_layers", "rms_norm_eps": "norm_eps", "num_hash_layers": "n_hash_layers",
    "n_routed_experts": "n_routed_experts", "n_shared_experts": "n_shared_experts", "vocab_size": "vocab_size",
    "q_lora_rank": "q_lora_rank", "head_dim": "head_dim", "o_groups": "o_groups", "o_lora_rank": "o_lora_rank",
    "rope_theta": "rope_theta", "compress_rope_theta": "compress_rope_theta", "index_n_heads": "index_n_heads",
    "index_head_dim": "index_head_dim", "index_topk": "index_topk", "hc_mult": "hc_mult",
    "hc_sinkhorn_iters": "hc_sinkhorn_iters", "hc_eps": "hc_eps", "swiglu_limit": "swiglu_limit",
    "bos_token_id": "bos_token_id", "eos_token_id": "eos_token_id", "max_position_embeddings": "max_seq_len",
    "expert_dtype": "expert_dtype",
}
_HF_IGNORED = {
    "architectures", "model_type", "torch_dtype", "dtype", "transformers_version", "use_cache", "initializer_range",
    "attention_bias", "attention_dropout", "tie_word_embeddings", "num_key_value_heads", "norm_topk_prob",
    "topk_method", "hidden_act", "pad_token_id", "output_router_logits", "router_aux_loss_coef",
    "router_jitter_noise", "mlp_bias", "partial_rotary_factor", "quantization_config", "_name_or_path",
    "return_dict", "output_hidden_states", "output_attentions", "chunk_size_feed_forward", "is_encoder_decoder",
    "id2label", "label2id", "problem_type", "tokenizer_class", "rope_scaling", "rope_parameters", "layer_types",
    "compress_rates", "mlp_layer_types", "compress_ratios", "compress_rate_csa", "compress_rate_hca",
}
_HF_LAYER_TYPES = {"sliding_attention": WINDOW, "compressed_sparse_attention": CSA, "heavily_compressed_attention": HCA}


def from_official_dict(raw: dict[str, Any]) -> ModelConfig:
    """Config from the official `inference/config.json` (ModelArgs names)."""
    unknown = set(raw) - _OFFICIAL_FIELDS - _OFFICIAL_IGNORED
    if unknown:
        raise ConfigError(f"unknown config field(s): {sorted(unknown)}")
    values = {k: v for k, v in raw.items() if k in _OFFICIAL_FIELDS}
    if "compress_ratios" in values:
        values["compress_ratios"] = tuple(values["compress_ratios"])
        values.setdefault("n_layers", len(values["compress_ratios"]) - values.get("n_mtp_layers", 1))
    return _build(values)


def from_hf_dict(raw: dict[str, Any]) -> ModelConfig:
    """Config from a transformers-style root `config.json` (official HF snapshot or `save_pretrained`)."""
    unknown = set(raw) - set(_HF_RENAMES) - _HF_IGNORED
    if unknown:
        raise ConfigError(f"unknown config field(s): {sorted(unknown)}")
    values = {_HF_RENAMES[k]: v for k, v in raw.items() if k in _HF_RENAMES}
    if isinstance(values.get("eos_token_id"), list):
        values["eos_token_id"] = values["eos_token_id"][0]
    if values.get("bos_token_id") is None:
        values.pop("bos_token_id", None)
    n_layers = values.get("n_layers", FLASH.n_layers)
    n_mtp = values.get("n_mtp_layers", 1)
    rates = {"compressed_sparse_attention": 4, "heavily_compressed_attention": 128, **(raw.get("compress_rates") or {})}
    rates["compressed_sparse_attention"] = raw.get("compress_rate_csa", rates["compressed_sparse_attention"])
    rates["heavily_compressed_attention"] = raw.get("compress_rate_hca", rates["heavily_compressed_attention"])
    values["csa_ratio"] = rates["compressed_sparse_attention"]
    if raw.get("layer_types"):
        kinds = [_HF_LAYER_TYPES[t] for t in raw["layer_types"]][:n_layers]
        ratios = [0 if k == WINDOW else rates[_hf_type(k)] for k in kinds]
        values["compress_ratios"] = tuple(ratios) + (0,) * n_mtp
    elif raw.get("compress_ratios"):
        values["compress_ratios"] = tuple(raw["compress_ratios"])
    if raw.get("mlp_layer_types"):
        values["n_hash_layers"] = sum(1 for t in raw["mlp_layer_types"] if t == "hash_moe")
    if "partial_rotary_factor" in raw and raw["partial_rotary_factor"] and "rope_head_dim" not in values:
        values["rope_head_dim"] = int(values.get("head_dim", FLASH.head_dim) * raw["partial_rotary_factor"])
    _read_hf_rope(raw, values)
    if raw.get("quantization_config") is None:
        values.setdefault("dtype", "bf16")
        values.setdefault("expert_dtype", "bf16")
    return _build(values)


def _hf_type(kind: str) -> str:
    return "compressed_sparse_attention" if kind == CSA else "heavily_compressed_attention"


def _read_hf_rope(raw: dict[str, Any], values: dict[str, Any]) -> None:
    yarn = raw.get("rope_scaling") or {}
    params = raw.get("rope_parameters") or {}
    if isinstance(params.get("compress"), dict):
        yarn = params["compress"]
        values["compress_rope_theta"] = yarn.get("rope_theta", values.get("compress_rope_theta"))
        if isinstance(params.get("main"), dict):
            values["rope_theta"] = params["main"].get("rope_theta", values.get("rope_theta"))
    elif params and not yarn:
        yarn = params
    if yarn.get("rope_type", yarn.get("type")) == "yarn":
        values["rope_factor"] = yarn["factor"]
        values["original_seq_len"] = yarn["original_max_position_embeddings"]
        values["beta_fast"] = yarn.get("beta_fast") or 32
        values["beta_slow"] = yarn.get("beta_slow") or 1
    elif yarn:
        values["original_seq_len"] = 0


def _build(values: dict[str, Any]) -> ModelConfig:
    try:
        return ModelConfig(**values)
    except TypeError as exc:
        raise ConfigError(str(exc)) from exc


def load_config(name_or_path: str | Path) -> ModelConfig:
    """A named config (`flash`, `pro`, `tiny`), a JSON file (official or transformers layout), or a checkpoint dir."""
    key = str(name_or_path)
    if key in NAMED_CONFIGS:
        return NAMED_CONFIGS[key]
    path = Path(key)
    if path.is_dir():
        inference = path / "inference" / "config.json"
        path = inference if inference.exists() else path / "config.json"
    if not path.exists():
        raise ConfigError(f"no named config or config file {key!r} (named: {sorted(NAMED_CONFIGS)})")
    raw = json.loads(path.read_text())
    return config_from_dict(raw)


def config_from_dict(raw: dict[str, Any]) -> ModelConfig:
    """Detect the layout by its field names."""
    if "hidden_size" in raw or "model_type" in raw:
        return from_hf_dict(raw)
    return from_official_dict(raw)


def to_hf_dict(config: ModelConfig) -> dict[str, Any]:
    """transformers `DeepseekV4Config` kwargs for the same architecture (used by init-checkpoint --format hf)."""
    kinds = {WINDOW: "sliding_attention", CSA: "compressed_sparse_attention", HCA: "heavily_compressed_attention"}
    main = config.layer_types[: config.n_layers]
    hca_ratio = next((r for r, k in zip(config.compress_ratios, main) if k == HCA), 128)
    out: dict[str, Any] = {
        "architectures": ["DeepseekV4ForCausalLM"], "model_type": "deepseek_v4",
        "layer_types": [kinds[k] for k in main],
        "compress_rates": {"compressed_sparse_attention": config.csa_ratio, "heavily_compressed_attention": hca_ratio},
        "mlp_layer_types": ["hash_moe"] * config.n_hash_layers + ["moe"] * (config.n_layers - config.n_hash_layers),
        "partial_rotary_factor": config.rope_head_dim / config.head_dim,
        "rope_scaling": {"rope_type": "yarn", "factor": config.rope_factor, "beta_fast": config.beta_fast,
                         "beta_slow": config.beta_slow, "original_max_position_embeddings": config.original_seq_len},
        "num_key_value_heads": 1, "tie_word_embeddings": False,
    }
    reverse = {ours: theirs for theirs, ours in _HF_RENAMES.items() if ours not in ("n_hash_layers", "rope_head_dim")}
    for ours, theirs in reverse.items():
        out[theirs] = getattr(config, ours)
    return out

