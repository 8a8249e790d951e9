"""Hot operations of the DeepSeek-V4 engine; the model calls only the functions exported here.

Each op has a torch twin in `kernels.ref` (the executable spec) with the signature every implementation shares:
C kernels in `kernels.cpu` serve decode-sized batches on CPU, Triton kernels in `kernels.triton` serve CUDA devices.
`kernels.dispatch` picks one per call (DSV4_KERNELS=auto|reference|triton, or `kernels.use(mode)`).
"""

from kernels import cpu
from kernels.dispatch import op, use
from kernels.ref import act_quant as ref_act_quant
from kernels.ref import argmax as ref_argmax
from kernels.ref import bf16_linear as ref_bf16_linear
from kernels.ref import compressor_pool as ref_compressor_pool
from kernels.ref import compressor_project as ref_compressor_project
from kernels.ref import fp4_experts as ref_fp4_experts
from kernels.ref import fp8_linear as ref_fp8_linear
from kernels.ref import fp8_swiglu as ref_fp8_swiglu
from kernels.ref import hadamard as ref_hadamard
from kernels.ref import indexer_topk as ref_indexer_topk
from kernels.ref import indexer_topk_sharded as ref_indexer_topk_sharded
from kernels.ref import kv_codec as ref_kv_codec
from kernels.ref import mhc as ref_mhc
from kernels.ref import moe_gate as ref_moe_gate
from kernels.ref import rms_norm as ref_rms_norm
from kernels.ref import rope as ref_rope
from kernels.ref import sinkhorn as ref_sinkhorn
from kernels.ref import sparse_attention as ref_sparse_attention
from kernels.ref.formats import dequantize as dequantize_weight

# op(twin, CPU kernel or None, Triton module or None)
fp8_linear = op(ref_fp8_linear.fp8_linear, cpu.fp8_linear.fp8_linear, "fp8_linear")
fp4_expert_ffn = op(ref_fp4_experts.fp4_expert_ffn, cpu.fp4_experts.fp4_expert_ffn, "fp4_experts")
fp8_swiglu_ffn = op(ref_fp8_swiglu.fp8_swiglu_ffn, cpu.fp8_swiglu.fp8_swiglu_ffn, "fp8_swiglu")
moe_gate = op(ref_moe_gate.moe_gate, cpu.moe_gate.moe_gate, None)
indexer_topk = op(ref_indexer_topk.indexer_topk, cpu.indexer_topk.indexer_topk, "indexer_topk")
indexer_topk_sharded = op(ref_indexer_topk_sharded.indexer_topk_sharded, None, None)
sparse_attention = op(ref_sparse_attention.sparse_attention, cpu.sparse_attention.sparse_attention,
                      "sparse_attention")
compressor_pool = op(ref_compressor_pool.compressor_pool, None, "compressor_pool")
compressor_project = op(ref_compressor_project.compressor_project, cpu.compressor_project.compressor_project, None)
bf16_linear = op(ref_bf16_linear.bf16_linear, cpu.bf16_linear.bf16_linear, None)
apply_rope = op(ref_rope.apply_rope, cpu.rope.apply_rope, None)
rms_norm = op(ref_rms_norm.rms_norm, cpu.rms_norm.rms_norm, None)
hc_pre = op(ref_mhc.hc_pre, cpu.mhc.hc_pre, None)
hc_post = op(ref_mhc.hc_post, cpu.mhc.hc_post, None)
hc_head = op(ref_mhc.hc_head, cpu.mhc.hc_head, None)
sinkhorn = op(ref_sinkhorn.sinkhorn, cpu.sinkhorn.sinkhorn, None)
encode_kv = op(ref_kv_codec.encode_kv, cpu.kv_codec.encode_kv, None)
decode_kv = op(ref_kv_codec.decode_kv, cpu.kv_codec.decode_kv, None)
encode_index_keys = op(ref_kv_codec.encode_index_keys, cpu.kv_codec.encode_index_keys, None)
fp4_round_trip = op(ref_act_quant.fp4_round_trip, cpu.act_quant.fp4_round_trip, None)
fp8_round_trip = ref_act_quant.fp8_round_trip
hadamard = op(ref_hadamard.hadamard, cpu.hadamard.hadamard, None)
argmax = op(ref_argmax.argmax, cpu.argmax.argmax, None)

__all__ = [
    "apply_rope",
    "argmax",
    "bf16_linear",
    "compressor_pool",
    "compressor_project",
    "decode_kv",
    "dequantize_weight",
    "encode_index_keys",
    "encode_kv",
    "fp4_expert_ffn",
    "fp4_round_trip",
    "fp8_linear",
    "fp8_round_trip",
    "fp8_swiglu_ffn",
    "hadamard",
    "hc_head",
    "hc_post",
    "hc_pre",
    "indexer_topk",
    "indexer_topk_sharded",
    "moe_gate",
    "rms_norm",
    "sinkhorn",
    "sparse_attention",
    "use",
]
