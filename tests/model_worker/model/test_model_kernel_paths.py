"""The whole model through each kernel path (kernels.dispatch modes) against the torch twins: the C kernels of the
CPU path ("auto" on CPU) and the Triton kernels ("triton", on the CPU interpreter in CI), over a chunked prefill and
single-token decode steps on the small config (every layer kind, FP8 linears, FP4 experts).

Reference numerics, so the comparison is tight: in official numerics bf16 activations and bf16 index scores make the
model chaotic at this size (re-chunking the twins alone moves logits by ~10%), and each kernel's official-numerics
path is checked op by op against its twin in tests/kernels."""

from __future__ import annotations

import pytest
import torch
from small_config import SMALL

import kernels
from model_worker.checkpoint.random_init import random_state_dict
from model_worker.model import DeepseekV4, ForwardBatch
from model_worker.numerics import REFERENCE

# Kernels sum in another order than the twins: float32 rounding, as between chunkings of the twins.
BOUND = 1e-4


@pytest.fixture(scope="module")
def model() -> DeepseekV4:
    model = DeepseekV4(SMALL, quantized=True, numerics=REFERENCE)
    model.load_state_dict(random_state_dict(model, 3), assign=True, strict=True)
    return model


def _logits(model: DeepseekV4, ids: torch.Tensor, mode: str) -> torch.Tensor:
    state, outs, start = model.new_state(), [], 0
    with kernels.use(mode):
        for size in (21, 1, 1, 1, 12):  # a prefill chunk, decode steps, another chunk
            outs.append(model(ForwardBatch.single(ids[start : start + size], state, logits="all")).logits)
            state.commit()
            start += size
    return torch.cat(outs)


@pytest.mark.parametrize("mode", ["auto", "triton"])
def test_kernel_path_matches_the_twins(model: DeepseekV4, mode: str) -> None:
    ids = torch.randint(0, SMALL.vocab_size, (36,), generator=torch.Generator().manual_seed(5))
    reference = _logits(model, ids, "reference")
    got = _logits(model, ids, mode)
    err = ((got - reference).norm(dim=-1) / reference.norm(dim=-1)).max().item()
    assert err <= BOUND, f"{mode}: relative logit error {err:.2e}"
