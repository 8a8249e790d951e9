"""Random weights for any config, in the model's own parameter layout (quantized where the model stores quantized).

Values are drawn in float32 and quantized, so the FP8/FP4 tensors hold exactly what the float model would compute
with after dequantization. Distinct tid2eid entries per token and non-trivial norms, sinks and mHC parameters keep
every code path numerically alive.
"""

from __future__ import annotations

import torch

from kernels.ref.formats import quantize_fp4, quantize_fp8_blocks
from model_worker.config import ModelConfig
from model_worker.model import DeepseekV4


def random_state_dict(model: DeepseekV4, seed: int, float_dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """A full state dict for `model` (built on meta) drawn from `seed`. Float tensors take the parameter's declared
    dtype (bf16 / fp32, as the official checkpoint stores them), or `float_dtype` when given."""
    gen = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    out: dict[str, torch.Tensor] = {}
    for name, param in params.items():
        if name in out:
            continue
        if name.endswith(".scale") and name[: -len(".scale")] + ".weight" in params:
            continue  # produced with its weight
        out.update(_draw(name, param, params, gen, model.config))
    for name, tensor in out.items():
        if tensor.is_floating_point() and tensor.dtype != torch.float8_e4m3fn:
            out[name] = tensor.to(float_dtype or params[name].dtype)
    return out


def _normal(shape: tuple[int, ...], std: float, gen: torch.Generator, mean: float = 0.0) -> torch.Tensor:
    return torch.randn(shape, generator=gen) * std + mean


def _draw(name: str, param: torch.Tensor, params: dict, gen: torch.Generator, config: ModelConfig) -> dict:
    shape = tuple(param.shape)
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "tid2eid":
        # Distinct experts per token: the first k of a random permutation of each row.
        order = torch.rand(shape[0], config.n_routed_experts, generator=gen).argsort(dim=1)
        return {name: order[:, : shape[1]].contiguous().to(torch.int64)}
    if leaf in ("w13", "w2") and param.dtype == torch.uint8:
        in_features = shape[2] * 2
        dense = _normal((shape[0] * shape[1], in_features), in_features**-0.5, gen)
        packed, scale = quantize_fp4(dense)
        return {name: packed.view(shape), f"{name}_scale": scale.view(shape[0], shape[1], -1)}
    if leaf in ("w13", "w2"):
        return {name: _normal(shape, shape[2] ** -0.5, gen)}
    if name.endswith(".weight") and name[: -len(".weight")] + ".scale" in params:
        dense = _normal(shape, shape[1] ** -0.5, gen)
        weight, scale = quantize_fp8_blocks(dense)
        return {name: weight, name[: -len(".weight")] + ".scale": scale}
    if name.endswith("norm.weight"):
        return {name: _normal(shape, 0.1, gen, mean=1.0)}
    if leaf.startswith("hc_") and leaf.endswith("_fn"):
        return {name: _normal(shape, 0.5 * shape[1] ** -0.5, gen)}
    if leaf.startswith("hc_") and leaf.endswith("_base"):
        return {name: _normal(shape, 0.5, gen)}
    if leaf.startswith("hc_") and leaf.endswith("_scale"):
        return {name: _normal(shape, 0.1, gen, mean=1.0)}
    if leaf == "attn_sink":
        return {name: _normal(shape, 1.0, gen)}
    if leaf == "ape":
        return {name: _normal(shape, 0.5, gen)}
    if leaf == "bias":
        return {name: _normal(shape, 0.1, gen)}
    if name.startswith("embed."):
        return {name: _normal(shape, 1.0, gen)}
    return {name: _normal(shape, shape[-1] ** -0.5, gen)}
