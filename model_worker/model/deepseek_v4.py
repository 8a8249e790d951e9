"""DeepSeek-V4 (Flash / Pro / tiny), read top-down like the paper:

    h = hc_mult copies of embed(tokens)                       [T, n, dim]
    for each block: h = mHC(attention)(h); h = mHC(MoE)(h)     attention: window-only, CSA or HCA
    logits = head(norm(hc_head(h)))                            [T, vocab]
    mtp: draft logits for token i+2 from (h_i, embed(token_{i+1}))       draft(): for the token after a sampled one

All per-sequence state lives in `SequenceState`s passed with the batch; the modules hold weights only. Under tensor
parallelism (`tp`) each rank holds its share of the heads, experts and vocabulary, and its states are the same as
every other rank's (the K=V head and the compressors are replicated). The forward is plain torch, with no `no_grad`
of its own, so the model can be trained; inference holds `no_grad` where it calls the model (the engine's runner,
the other ranks' loop, the tools).
"""

from __future__ import annotations

import torch
from torch import nn

import kernels
from model_worker.config import ModelConfig
from model_worker.model.batch import ForwardBatch, ForwardOutput, Segment
from model_worker.model.block import Block
from model_worker.model.layers import Embedding, Linear, RMSNorm
from model_worker.model.mhc import add_hc_params
from model_worker.model.mtp import MTPBlock
from model_worker.numerics import OFFICIAL, Numerics
from model_worker.state import SequenceState, StateLayout
from model_worker.tensor_parallel import SINGLE, TensorParallel


class DeepseekV4(nn.Module):
    def __init__(self, config: ModelConfig, quantized: bool = True, numerics: Numerics = OFFICIAL,
                 tp: TensorParallel = SINGLE) -> None:
        """quantized: FP8 block-scaled linears and packed FP4 experts (official layout) vs dense weights (HF layout).
        Parameters are created on the meta device; a checkpoint loader assigns them."""
        super().__init__()
        self.config, self.numerics, self.tp = config, numerics, tp
        self.fingerprint: str | None = None  # names the weights once loaded (sessions are tied to it)
        n = config.hc_mult
        self.embed = Embedding(config.vocab_size, config.dim, tp)
        self.layers = nn.ModuleList(Block(config, i, quantized, tp) for i in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        vocab = tp.split(config.vocab_size, "vocab_size")
        self.head = Linear(config.dim, vocab[1] - vocab[0], role="head")
        add_hc_params(self, "hc_head", n, n * config.dim, 1)
        self.mtp = nn.ModuleList(MTPBlock(config, config.n_layers + k, quantized, tp)
                                 for k in range(config.n_mtp_layers))
        # (the ids whose head rows are not all zero, a head of those rows only): skip_zero_vocab_rows; a tuple, so
        # that the copy stays out of the parameters and the state dict
        self.live_vocab: tuple[torch.Tensor, Linear] | None = None

    @torch.no_grad()
    def skip_zero_vocab_rows(self, most: float = 0.5) -> int:
        """Serving a model trained on part of the vocabulary (agent-small): the head's all-zero rows give logits of
        exactly 0, so when they are more than `most` of the vocabulary only the other rows are multiplied and the
        zeros are filled in. Returns how many rows are skipped (0: the head stays whole)."""
        weight = self.head.weight
        if self.tp.size > 1 or self.head.scale is not None or weight.is_meta:
            return 0
        # by blocks of rows: a released head (Flash: 129,280 x 4,096 bf16) is scanned without a head-sized mask
        live = torch.cat([block.ne(0).any(dim=1) for block in weight.split(4096)]).nonzero()[:, 0]
        if weight.shape[0] - len(live) <= most * weight.shape[0]:
            return 0
        head = Linear(self.config.dim, len(live), role="head")
        head.weight = nn.Parameter(weight[live].contiguous(), requires_grad=False)
        self.live_vocab = live.to(weight.device), head
        return weight.shape[0] - len(live)

    @property
    def layout(self) -> StateLayout:
        return StateLayout(self.config, self.numerics)

    def new_state(self) -> SequenceState:
        return SequenceState(self.layout, self.embed.weight.device)

    def forward(self, batch: ForwardBatch) -> ForwardOutput:
        c, numerics, layout = self.config, self.numerics, self.layout
        segments, row = [], 0
        for length, state in zip(batch.seq_lens, batch.states):
            if state.layout != layout:
                raise ValueError("sequence state was made for another model or numerics")
            segments.append(Segment(row, length, state.num_tokens, state))
            row += length
        ids = batch.token_ids.to(self.embed.weight.device)
        lowest, highest = ids.aminmax()
        if int(lowest) < 0 or int(highest) >= c.vocab_size:  # checked before any state is touched
            raise ValueError(f"token ids must lie in [0, {c.vocab_size})")
        positions = _positions(segments, ids.device)
        streams = self.embed(ids).to(numerics.act_dtype).unsqueeze(1).repeat(1, c.hc_mult, 1)
        for block in self.layers:
            streams = block(streams, ids, positions, segments, layout, numerics)
        for seg in segments:
            if len(self.mtp):  # every token's MTP inputs: its streams and id
                seg.state.mtp_hidden.append(streams[seg.rows].flatten(1))
                seg.state.recent_tokens.append(ids[seg.rows, None])
            seg.state.num_tokens += seg.length
        mtp_logits, mtp_segments = None, []
        if len(self.mtp) and (batch.draft_logits or batch.mtp_every_pair):
            mtp_logits, mtp_segments = self._advance_mtp([s.state for s in segments], [None] * len(segments),
                                                         batch.mtp_every_pair)
        if batch.logits == "none":
            logits = torch.empty(0, c.vocab_size)
        else:
            last = batch.last_rows or [1] * len(segments)
            rows = slice(None) if batch.logits == "all" else \
                [s.first_row + s.length - k + j for s, k in zip(segments, last) for j in range(k)]
            logits = self._logits(streams[rows], self.hc_head_fn, self.hc_head_base, self.hc_head_scale, self.norm)
        return ForwardOutput(logits, mtp_logits, mtp_segments)

    def draft(self, states: list[SequenceState], next_tokens: list[int]) -> torch.Tensor:
        """Draft logits [B, V] for the token after each `next_tokens[b]` (sampled from the main model's last logits,
        not yet fed): the MTP layer advances over its pairs up to (h_last, next_token)."""
        if not len(self.mtp):
            raise ValueError("this model has no MTP layer to draft with")
        logits, drafted = self._advance_mtp(states, next_tokens)
        assert drafted == list(range(len(states))), "a pair with a sampled token is always new"
        return logits

    def _logits(self, streams: torch.Tensor, fn: torch.Tensor, base: torch.Tensor, scale: torch.Tensor,
                norm: RMSNorm) -> torch.Tensor:
        x = norm(kernels.hc_head(streams, fn, base, scale, self.config.norm_eps, self.config.hc_eps))
        if self.live_vocab is not None:
            ids, head = self.live_vocab
            live = head(x, self.numerics)
            return live.new_zeros(live.shape[0], self.config.vocab_size).index_copy_(1, ids, live)
        return self.tp.all_gather(self.head(x, self.numerics))  # each rank computes its vocabulary's logits

    def _advance_mtp(self, states: list[SequenceState], next_tokens: list[int | None], every_pair: bool = False
                     ) -> tuple[torch.Tensor | None, list[int]]:
        """Advance each state's MTP layer over the pairs (h_i, token_{i+1}) it has not seen (at most the last window
        of them), ending at (h_last, next_token) when one is given, else at the last fed pair; draft at the end.
        `every_pair` (training): over every pair not seen yet, with logits at each (pair i predicts token i + 2)."""
        c, numerics = self.config, self.numerics
        hidden_rows, token_rows, pair_segments, last_rows, drafted = [], [], [], [], []
        for index, (state, next_token) in enumerate(zip(states, next_tokens)):
            pairs = state.num_tokens - (next_token is None)
            first = state.mtp_pairs if every_pair else max(state.mtp_pairs, pairs - c.window_size)
            if first >= pairs:
                continue
            if first > state.mtp_pairs:  # older pairs can no longer reach the window: skip them
                state.layers[c.n_layers].window.clear(first)
            hidden_rows.append(state.mtp_hidden.rows(first, pairs))
            tokens = state.recent_tokens.rows(first + 1, state.num_tokens)[:, 0]  # every fed one after `first`
            if next_token is not None:
                tokens = torch.cat([tokens, torch.tensor([next_token], dtype=tokens.dtype, device=tokens.device)])
            token_rows.append(tokens)
            row = sum(s.length for s in pair_segments)
            pair_segments.append(Segment(row, pairs - first, first, state))
            last_rows.append(row + pairs - first - 1)
            drafted.append(index)
            state.mtp_pairs = pairs
        if not pair_segments:
            return None, []
        hidden = torch.cat(hidden_rows).view(-1, c.hc_mult, c.dim)
        tokens = torch.cat(token_rows)
        positions = _positions(pair_segments, tokens.device)
        mtp = self.mtp[0]
        mtp_streams = mtp.input_streams(self.embed(tokens), hidden, numerics)
        mtp_streams = mtp(mtp_streams, tokens, positions, pair_segments, self.layout, numerics)
        rows = slice(None) if every_pair else torch.tensor(last_rows)
        return self._logits(mtp_streams[rows], mtp.hc_head_fn, mtp.hc_head_base, mtp.hc_head_scale, mtp.norm), drafted


def _positions(segments: list[Segment], device: torch.device) -> torch.Tensor:
    """[T] every token's position; each segment gets its own rows of it."""
    positions = torch.cat([torch.arange(s.start_position, s.start_position + s.length) for s in segments]).to(device)
    for seg in segments:
        seg.positions = positions[seg.rows]
    return positions
