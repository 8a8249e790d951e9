"""Hot operations of the DeepSeek-V4 engine, one op per module.

The model calls only the functions exported here. Each has a torch twin in `kernels.ref` with the same signature;
the torch twins are the executable spec and the CPU path.
"""

from kernels.ref.act_quant import fp4_round_trip, fp8_round_trip
from kernels.ref.compressor_pool import compressor_pool
from kernels.ref.formats import dequantize as dequantize_weight
from kernels.ref.fp4_experts import fp4_expert_ffn
from kernels.ref.fp8_linear import fp8_linear
from kernels.ref.hadamard import hadamard
from kernels.ref.indexer_topk import indexer_topk
from kernels.ref.sinkhorn import sinkhorn
from kernels.ref.sparse_attention import sparse_attention

__all__ = [
    "compressor_pool",
    "dequantize_weight",
    "fp4_expert_ffn",
    "fp4_round_trip",
    "fp8_linear",
    "fp8_round_trip",
    "hadamard",
    "indexer_topk",
    "sinkhorn",
    "sparse_attention",
]
