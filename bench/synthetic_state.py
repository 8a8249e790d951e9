"""Fill a SequenceState to N tokens with random but well-formed content, for measuring decode at contexts a CPU
cannot prefill (1M tokens). Every store gets exactly what a real prefill of N tokens leaves after a commit."""

from __future__ import annotations

import torch

from model_worker.config import CSA, WINDOW
from model_worker.state import SequenceState

_ENCODE_BLOCK = 65536


def _encoded(encode, rows: int, dim: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    parts = [encode(torch.randn(min(_ENCODE_BLOCK, rows - first), dim, generator=gen).to(device))
             for first in range(0, rows, _ENCODE_BLOCK)]
    return torch.cat(parts) if parts else encode(torch.zeros(0, dim, device=device))


def fill_synthetic(state: SequenceState, num_tokens: int, seed: int = 0) -> None:
    """Make `state` look like a committed prefill of num_tokens tokens (num_tokens >= window size), on the state's
    device."""
    layout, config = state.layout, state.layout.config
    gen = torch.Generator().manual_seed(seed)
    device = state.mtp_hidden.buffer.device
    window = config.window_size
    assert num_tokens >= window, "synthetic fill starts past the first window"
    n_main = config.n_layers
    for layer_id, layer in enumerate(state.layers):
        end = num_tokens if layer_id < n_main else num_tokens - 1  # the MTP layer holds one pair fewer
        layer.window.reset(end - window + 1, _encoded(layout.encode_kv, window - 1, config.head_dim, gen, device))
        if layer.kind == WINDOW:
            continue
        m = layer.ratio
        keep = end // m * m - (m if layer.kind == CSA else 0)
        layer.comp.reset(keep, torch.randn(end - keep, layer.comp.buffer.shape[1], generator=gen).to(device))
        layer.entries.reset(_encoded(layout.encode_kv, end // m, config.head_dim, gen, device))
        if layer.kind == CSA:
            tail = torch.randn(end - keep, layer.index_comp.buffer.shape[1], generator=gen)
            layer.index_comp.reset(keep, tail.to(device))
            layer.index_keys.reset(_encoded(layout.encode_index_keys, end // m, config.index_head_dim, gen, device))
    keep = window + 1
    state.mtp_hidden.reset(num_tokens - keep, torch.randn(keep, config.hc_mult * config.dim, generator=gen).to(
        device, layout.numerics.act_dtype))
    state.recent_tokens.reset(num_tokens - keep,
                              torch.randint(0, config.vocab_size, (keep, 1), generator=gen).to(device))
    state.num_tokens = state.committed = num_tokens
    state.mtp_pairs = num_tokens - 1
