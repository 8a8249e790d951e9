"""Hot operations of the DeepSeek-V4 engine, one op per module.

The model calls only the functions exported here. Each has a torch twin in `kernels.ref` with the same signature;
the torch twins are the executable spec. `kernels.cpu` holds C kernels for the ops that dominate decode on CPU; each
falls back to its twin for shapes or devices it does not cover (and everywhere when DSV4_CPU_KERNELS=0).
"""

from kernels.cpu.act_quant import fp4_round_trip
from kernels.cpu.bf16_linear import bf16_linear
from kernels.cpu.fp4_experts import fp4_expert_ffn
from kernels.cpu.fp8_linear import fp8_linear
from kernels.cpu.indexer_topk import indexer_topk
from kernels.cpu.kv_codec import decode_kv, encode_index_keys, encode_kv
from kernels.cpu.mhc import hc_post, hc_pre
from kernels.cpu.rope import apply_rope
from kernels.cpu.sinkhorn import sinkhorn
from kernels.cpu.sparse_attention import sparse_attention
from kernels.ref.act_quant import fp8_round_trip
from kernels.ref.compressor_pool import compressor_pool
from kernels.ref.formats import dequantize as dequantize_weight
from kernels.ref.hadamard import hadamard
from kernels.ref.mhc import hc_head

__all__ = [
    "apply_rope",
    "bf16_linear",
    "compressor_pool",
    "decode_kv",
    "dequantize_weight",
    "encode_index_keys",
    "encode_kv",
    "fp4_expert_ffn",
    "fp4_round_trip",
    "fp8_linear",
    "fp8_round_trip",
    "hadamard",
    "hc_head",
    "hc_post",
    "hc_pre",
    "indexer_topk",
    "sinkhorn",
    "sparse_attention",
]
