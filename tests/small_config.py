"""The small model config the engine tests share: every layer kind (window-only, CSA m=4, HCA m'=16), a hash-routed
layer, YaRN (original_seq_len < max_seq_len), 16 index heads (no index-score ties), MTP; fast on CPU."""

from __future__ import annotations

from model_worker.config import ModelConfig

SMALL = ModelConfig(
    vocab_size=512, dim=128, moe_inter_dim=64, n_layers=4, n_hash_layers=1, n_heads=4, n_routed_experts=8,
    n_activated_experts=2, q_lora_rank=64, head_dim=128, rope_head_dim=64, o_groups=2, o_lora_rank=32, window_size=8,
    index_n_heads=16, index_head_dim=64, index_topk=3, compress_ratios=(0, 4, 16, 4, 0), original_seq_len=16,
    rope_factor=4, max_seq_len=4096,
)
