"""Batch sampler: logits [B, V] plus one SamplingState per row -> token ids and their logprobs.

Order (vLLM v1): a grammar's mask of allowed tokens, logit_bias, penalties (repetition, frequency, presence), then
for non-greedy rows temperature, min-p, top-k, top-p, and an inverse-CDF draw from the row's counter-based RNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

import kernels
from foundation.sampling import InvalidSamplingParams
from model_worker.sampling import ops
from model_worker.sampling.state import SamplingState


@dataclass
class SamplerOutput:
    """Result of one sampling step, on the logits' device.

    Attributes:
        token_ids: [B] int64 chosen tokens.
        logprobs: [B] float32 log-softmax of the processed logits at the chosen token. For
            sampled rows that is the distribution actually sampled from (after temperature and
            truncation); for greedy rows, the logits after bias and penalties at temperature 1.
    """

    token_ids: torch.Tensor
    logprobs: torch.Tensor
    top_logprobs: list[list[tuple[int, float]]] | None = None  # per row, best first; only with top_logprobs > 0


class Sampler:
    """Stateless; never mutates the caller's logits nor the states (the engine appends tokens).

    Rows are independent: a row's token depends only on its logits, its params and its state,
    never on which other requests share the batch.
    """

    def sample(self, logits: torch.Tensor, states: Sequence[SamplingState]) -> SamplerOutput:
        """Sample one token per row.

        Args:
            logits: [B, V] floating point, any device; each row needs at least one finite value.
            states: B per-request states, row-aligned with `logits`.
        """
        processed = self.process_logits(logits, states)
        token_ids = torch.empty(processed.shape[0], dtype=torch.int64, device=processed.device)
        greedy_rows = [i for i, s in enumerate(states) if s.params.is_greedy]
        random_rows = [i for i, s in enumerate(states) if not s.params.is_greedy]
        if greedy_rows:
            index = self._longs(greedy_rows, processed.device)
            token_ids[index] = kernels.argmax(processed[index])
        if random_rows:
            index = self._longs(random_rows, processed.device)
            probs = processed[index].softmax(dim=-1)
            uniforms = torch.tensor(
                [states[i].next_uniform() for i in random_rows], dtype=torch.float64
            ).to(processed.device)
            token_ids[index] = ops.sample_inverse_cdf(probs, uniforms)
        all_logprobs = processed.log_softmax(dim=-1)
        logprobs = all_logprobs.gather(1, token_ids.unsqueeze(1)).squeeze(1)
        return SamplerOutput(token_ids=token_ids, logprobs=logprobs, top_logprobs=self._top(all_logprobs, states))

    @staticmethod
    def _top(logprobs: torch.Tensor, states: Sequence[SamplingState]) -> list[list[tuple[int, float]]] | None:
        """The k most likely tokens of each row that asks for them; tokens ruled out (-inf) are left out."""
        wanted = max((s.params.top_logprobs for s in states), default=0)
        if not wanted:
            return None
        values, indices = logprobs.topk(wanted, dim=-1)
        return [[(t, v) for t, v in zip(ids[: s.params.top_logprobs], vals[: s.params.top_logprobs])
                 if v != float("-inf")]
                for s, ids, vals in zip(states, indices.tolist(), values.tolist())]

    def process_logits(self, logits: torch.Tensor, states: Sequence[SamplingState]) -> torch.Tensor:
        """Return a float32 copy of `logits` [B, V] with every processing step applied.

        Greedy rows get bias and penalties only: the later steps cannot change their argmax.
        """
        if logits.dim() != 2:
            raise ValueError(f"logits must be [batch, vocab], got shape {tuple(logits.shape)}")
        if logits.shape[0] != len(states):
            raise ValueError(
                f"logits has {logits.shape[0]} rows but {len(states)} states were given"
            )
        # Explicit copy: .float() would alias float32 input and the in-place ops would leak out.
        out = logits.to(dtype=torch.float32, copy=True)
        for row, state in enumerate(states):
            if state.constraint is not None:
                out[row].masked_fill_(~state.constraint.allowed().to(out.device), float("-inf"))
        self._apply_logit_bias(out, states)
        self._apply_penalties(out, states)
        random_rows = [i for i, s in enumerate(states) if not s.params.is_greedy]
        if random_rows:
            index = self._longs(random_rows, out.device)
            rows = out[index]
            self._apply_truncation(rows, [states[i] for i in random_rows])
            out[index] = rows
        return out

    def _apply_truncation(self, logits: torch.Tensor, states: Sequence[SamplingState]) -> None:
        """Temperature, min-p, top-k, top-p on the non-greedy rows only."""
        device = logits.device
        vocab_size = logits.shape[-1]
        params = [s.params for s in states]
        ops.apply_temperature(logits, self._floats([p.temperature for p in params], device))
        if any(p.min_p > 0 for p in params):
            ops.apply_min_p(logits, self._floats([p.min_p for p in params], device))
        if any(p.top_k_enabled or p.top_p < 1.0 for p in params):
            top_k = [p.top_k if p.top_k_enabled else vocab_size for p in params]
            ops.apply_top_k_top_p(
                logits,
                torch.tensor(top_k, dtype=torch.int64).to(device),
                self._floats([p.top_p for p in params], device),
            )

    def _apply_logit_bias(self, logits: torch.Tensor, states: Sequence[SamplingState]) -> None:
        vocab_size = logits.shape[-1]
        rows: list[int] = []
        token_ids: list[int] = []
        bias: list[float] = []
        for row, state in enumerate(states):
            for token_id, value in state.params.logit_bias.items():
                if token_id >= vocab_size:
                    raise InvalidSamplingParams(
                        f"logit_bias token id {token_id} is outside the vocabulary "
                        f"(size {vocab_size})"
                    )
                rows.append(row)
                token_ids.append(token_id)
                bias.append(value)
        if rows:
            device = logits.device
            ops.apply_logit_bias(
                logits,
                self._longs(rows, device),
                self._longs(token_ids, device),
                self._floats(bias, device),
            )

    def _apply_penalties(self, logits: torch.Tensor, states: Sequence[SamplingState]) -> None:
        device = logits.device
        rep_rows: list[torch.Tensor] = []
        rep_ids: list[torch.Tensor] = []
        rep_values: list[torch.Tensor] = []
        add_rows: list[int] = []
        add_ids: list[int] = []
        add_amounts: list[float] = []
        for row, state in enumerate(states):
            p = state.params
            if p.repetition_penalty != 1.0:
                output_ids = torch.tensor(list(state.output_token_counts), dtype=torch.int64)
                seen = torch.cat([state.prompt_ids_unique(), output_ids])
                rep_ids.append(seen)
                rep_rows.append(torch.full_like(seen, row))
                rep_values.append(torch.full(seen.shape, p.repetition_penalty, dtype=torch.float32))
            if p.frequency_penalty != 0.0 or p.presence_penalty != 0.0:
                for token_id, count in state.output_token_counts.items():
                    add_rows.append(row)
                    add_ids.append(token_id)
                    add_amounts.append(p.frequency_penalty * count + p.presence_penalty)
        if rep_ids:
            ops.apply_repetition_penalty(
                logits,
                torch.cat(rep_rows).to(device),
                torch.cat(rep_ids).to(device),
                torch.cat(rep_values).to(device),
            )
        if add_rows:
            ops.apply_additive_penalty(
                logits,
                self._longs(add_rows, device),
                self._longs(add_ids, device),
                self._floats(add_amounts, device),
            )

    @staticmethod
    def _longs(values: list[int], device: torch.device) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.int64).to(device)

    @staticmethod
    def _floats(values: list[float], device: torch.device) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float32).to(device)
