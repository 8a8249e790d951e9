"""A committed SequenceState as stored values: immutable full pages, grouped by compression ratio, and one tail.

Page group (ratio r, index j): for every main layer compressed at r, entries [64 j, 64 (j + 1)) of its KV stream
("{layer}.kv") and, for CSA, of its index keys ("{layer}.index_keys"). All layers of one ratio fill pages in step
(entries = tokens // r), so one value per (r, j) keeps a million-token resume to a few thousand reads.
Tail: everything else the next token needs, taken after a commit (so the row logs hold only what must survive):
each layer's window rows, compressor pending rows and partial pages, the MTP layer's window and inputs, counters.
Sampler state is per session, not per content, and travels in the manifest instead.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from model_worker.config import WINDOW
from model_worker.state import PAGE_ENTRIES, SequenceState
from model_worker.state.rows import PagedRows, RowLog

_ROW_LOGS = ("window", "comp", "index_comp")
_PAGED = ("entries", "index_keys")
_STREAM_NAMES = {"entries": "kv", "index_keys": "index_keys"}


def full_pages(state: SequenceState, ratio: int) -> int:
    """Full pages each stream compressed at `ratio` holds."""
    return state.num_tokens // ratio // PAGE_ENTRIES


def page_group(state: SequenceState, ratio: int, index: int) -> dict[str, torch.Tensor]:
    """The tensors of page group (ratio, index), copied: the writer thread encodes them later, when the pages may
    have gone back to their pool and hold another sequence's entries."""
    out = {}
    for layer_id, layer in enumerate(state.main_layers):
        if layer.ratio != ratio:
            continue
        for name in _PAGED:
            paged: PagedRows | None = getattr(layer, name)
            if paged is not None:
                out[f"{layer_id}.{_STREAM_NAMES[name]}"] = paged.page(index).clone()
    return out


def tail_tensors(state: SequenceState) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """(tensors, metadata) of the state's tail; row logs keep their first position in the metadata."""
    tensors: dict[str, torch.Tensor] = {}
    starts: dict[str, int] = {}
    for layer_id, layer in enumerate(state.layers):
        if layer_id >= state.layout.config.n_layers and layer.kind != WINDOW:
            raise ValueError("sessions store window-only MTP layers only")
        for name in _ROW_LOGS:
            log: RowLog | None = getattr(layer, name)
            if log is not None:
                tensors[f"{layer_id}.{name}"] = log.rows(log.start, log.end)
                starts[f"{layer_id}.{name}"] = log.start
        for name in _PAGED:
            paged: PagedRows | None = getattr(layer, name)
            if paged is not None:
                tensors[f"{layer_id}.{_STREAM_NAMES[name]}.partial"] = paged.page(paged.num_full_pages)
    for name in ("mtp_hidden", "recent_tokens"):
        log = getattr(state, name)
        tensors[name] = log.rows(log.start, log.end)
        starts[name] = log.start
    metadata = {"num_tokens": state.num_tokens, "mtp_pairs": state.mtp_pairs, "starts": starts}
    return tensors, metadata


def restore_state(state: SequenceState, tensors: dict[str, torch.Tensor], metadata: dict[str, object],
                  load_page: Callable[[int, int], dict[str, torch.Tensor]]) -> None:
    """Fill a fresh state from a tail and its pages; load_page(ratio, index) returns a page group's tensors."""
    num_tokens = int(metadata["num_tokens"])
    starts: dict[str, int] = metadata["starts"]  # type: ignore[assignment]
    device = state.mtp_hidden.buffer.device
    pages: dict[int, list[dict[str, torch.Tensor]]] = {}
    for ratio in sorted({layer.ratio for layer in state.main_layers if layer.kind != WINDOW}):
        pages[ratio] = [load_page(ratio, j) for j in range(num_tokens // ratio // PAGE_ENTRIES)]
    for layer_id, layer in enumerate(state.layers):
        for name in _ROW_LOGS:
            log: RowLog | None = getattr(layer, name)
            if log is not None:
                key = f"{layer_id}.{name}"
                log.reset(int(starts[key]), _expect(tensors, key, log.buffer).to(device))
        for name in _PAGED:
            paged: PagedRows | None = getattr(layer, name)
            if paged is None:
                continue
            stream = f"{layer_id}.{_STREAM_NAMES[name]}"
            parts = [_expect(group, stream, paged.buffer) for group in pages[layer.ratio]]
            parts.append(_expect(tensors, stream + ".partial", paged.buffer))
            paged.reset(torch.cat(parts).to(device))
            if paged.count != num_tokens // layer.ratio:
                raise ValueError(f"{stream}: {paged.count} entries stored for {num_tokens} tokens")
    for name in ("mtp_hidden", "recent_tokens"):
        log = getattr(state, name)
        log.reset(int(starts[name]), _expect(tensors, name, log.buffer).to(device))
    state.num_tokens = state.committed = num_tokens
    state.mtp_pairs = int(metadata["mtp_pairs"])


def _expect(tensors: dict[str, torch.Tensor], key: str, like: torch.Tensor) -> torch.Tensor:
    """tensors[key], checked against the store it goes into (width and dtype): a clear error, not a wrong state."""
    value = tensors.get(key)
    if value is None:
        raise ValueError(f"stored state lacks {key}")
    if value.dtype != like.dtype or value.dim() != 2 or value.shape[1] != like.shape[1]:
        raise ValueError(f"stored {key} is {tuple(value.shape)} {value.dtype}, expected [*, {like.shape[1]}] "
                         f"{like.dtype}")
    return value
