"""Device parity: the same states sample the same tokens from CUDA logits as from CPU logits.

Skipped without a GPU. Draws come from the counter-based RNG on the host, so only float rounding
differs between devices; a mismatch would need a draw within ~1e-6 of a CDF boundary.
"""

from __future__ import annotations

import pytest
import torch

from model_worker.sampling import Sampler, SamplingParams, SamplingState

pytestmark = pytest.mark.gpu

PARAMS = [
    SamplingParams(temperature=0.0, repetition_penalty=1.5),
    SamplingParams(seed=1, temperature=0.8, top_k=5),
    SamplingParams(seed=2, top_p=0.6, presence_penalty=0.5),
    SamplingParams(seed=3, min_p=0.1, temperature=1.5, logit_bias={3: 2.0}),
    SamplingParams(seed=4, top_k=40, top_p=0.9, frequency_penalty=0.3),
]


def test_cuda_matches_cpu() -> None:
    gen = torch.Generator().manual_seed(3)
    cpu_states = [SamplingState(p, prompt_token_ids=(1, 2, 3)) for p in PARAMS]
    cuda_states = [SamplingState.restore(s.snapshot()) for s in cpu_states]
    sampler = Sampler()
    for _ in range(20):
        logits = torch.randn(len(PARAMS), 2048, generator=gen) * 4
        on_cpu = sampler.sample(logits, cpu_states)
        on_cuda = sampler.sample(logits.cuda(), cuda_states)
        assert on_cuda.token_ids.is_cuda and on_cuda.logprobs.is_cuda
        assert on_cuda.token_ids.tolist() == on_cpu.token_ids.tolist()
        torch.testing.assert_close(on_cuda.logprobs.cpu(), on_cpu.logprobs, rtol=1e-5, atol=1e-5)
        for state, token in zip(cpu_states, on_cpu.token_ids.tolist(), strict=True):
            state.append(token)
        for state, token in zip(cuda_states, on_cuda.token_ids.tolist(), strict=True):
            state.append(token)
