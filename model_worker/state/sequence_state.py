"""One sequence's streaming state: per layer the window rows, the compressor's pending rows and the paged
compressed entries (plus, for CSA, the indexer's), and the MTP layer's own window.

Positions below `committed` are final: truncation (speculative decoding, stop strings) may only go back to a
position inside the uncommitted tail, which is why the row logs keep every row since the last commit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from model_worker.config import CSA, HCA, WINDOW
from model_worker.state.layout import PAGE_ENTRIES, StateLayout
from model_worker.state.pages import PagePool, PagePools, pools_for
from model_worker.state.rows import PagedRows, RowLog, SharedPages


class LayerState:
    """State of one attention layer (main or MTP)."""

    def __init__(self, layout: StateLayout, layer_id: int, device: torch.device | str,
                 pools: PagePools | None = None) -> None:
        config = layout.config
        self.kind = config.layer_type(layer_id)
        self.ratio = config.compress_ratios[layer_id]
        self.window_size = config.window_size
        self.window = RowLog(layout.kv_width, layout.kv_dtype, device)
        self.comp: RowLog | None = None
        self.entries: PagedRows | None = None
        self.index_comp: RowLog | None = None
        self.index_keys: PagedRows | None = None
        pools = pools or pools_for(layout, device)
        if self.kind != WINDOW:
            self.comp = RowLog(layout.compressor_width(self.kind), torch.float32, device)
            self.entries = PagedRows(pools.get((layer_id, "entries"), layout.kv_width, layout.kv_dtype, PAGE_ENTRIES,
                                               device))
        if self.kind == CSA:
            self.index_comp = RowLog(layout.compressor_width(CSA, index=True), torch.float32, device)
            self.index_keys = PagedRows(pools.get((layer_id, "index_keys"), layout.index_key_width, layout.kv_dtype,
                                                  PAGE_ENTRIES, device))

    def logs(self) -> list[RowLog]:
        return [log for log in (self.window, self.comp, self.index_comp) if log is not None]

    def paged(self) -> list[PagedRows]:
        return [p for p in (self.entries, self.index_keys) if p is not None]

    def commit(self, end: int) -> None:
        self.window.trim_front(end - (self.window_size - 1))
        if self.comp is not None:
            group_start = end // self.ratio * self.ratio
            keep = group_start - (self.ratio if self.kind == CSA else 0)
            for log in (self.comp, self.index_comp):
                if log is not None:
                    log.trim_front(keep)

    def truncate(self, end: int) -> None:
        for log in self.logs():
            log.truncate(end)
        for paged in self.paged():
            paged.truncate(end // self.ratio)

    def nbytes(self) -> dict[str, int]:
        out = {"window": self.window.nbytes()}
        if self.comp is not None:
            out["compressor_tail"] = self.comp.nbytes() + (self.index_comp.nbytes() if self.index_comp else 0)
            out["kv_pages"] = self.entries.nbytes()
        if self.index_keys is not None:
            out["index_pages"] = self.index_keys.nbytes()
        return out


@dataclass
class StateSnapshot:
    """A deep copy of a SequenceState, restorable into a state of the same layout."""

    num_tokens: int
    committed: int
    mtp_pairs: int
    tensors: dict[str, tuple[int, torch.Tensor]] = field(default_factory=dict)
    sampling: bytes | None = None


@dataclass
class SharedState:
    """A checkpoint of a SequenceState in this process: its paged streams by reference (their pages held, not
    copied), its row logs (window, compressor tails, MTP inputs: bounded by the window) copied. Adoptable by any
    state of the same layout and device; its hold on the pages ends when it is garbage."""

    num_tokens: int
    committed: int
    mtp_pairs: int
    logs: dict[str, tuple[int, torch.Tensor]]
    pages: dict[str, SharedPages]
    sampling: bytes | None = None

    def page_holds(self) -> list[tuple[PagePool, int]]:
        """Every (pool, page) it holds."""
        return [(shared.pool, page) for shared in self.pages.values() for page in shared.pages]

    def log_bytes(self) -> int:
        return sum(rows.nbytes for _, rows in self.logs.values())


class SequenceState:
    """Everything the engine keeps for one sequence between forward passes."""

    def __init__(self, layout: StateLayout, device: torch.device | str = "cpu", pools: PagePools | None = None) -> None:
        """`pools`: where its pages come from; the process's pools of the layout by default (shared with every
        other state, so that checkpoints can share pages), or pools of its own (a training sequence, whose
        entries carry gradients)."""
        config = layout.config
        self.layout = layout
        self.layers = [LayerState(layout, i, device, pools) for i in range(config.n_layers + config.n_mtp_layers)]
        self.num_tokens = 0
        self.committed = 0
        # The MTP layer advances only when drafts are asked for. Its attention is window-only, so the last
        # window_size pairs (main hidden streams h_i, token i+1) are all it ever needs to catch up exactly.
        self.mtp_pairs = 0  # the MTP layer holds pairs (h_i, token_{i+1}) for i < mtp_pairs
        self.mtp_hidden = RowLog(config.hc_mult * config.dim, layout.numerics.act_dtype, device)
        self.recent_tokens = RowLog(1, torch.long, device)
        self.sampling: bytes | None = None  # the sampler's RNG and counters, opaque here

    @property
    def main_layers(self) -> list[LayerState]:
        return self.layers[: self.layout.config.n_layers]

    @property
    def mtp_layers(self) -> list[LayerState]:
        return self.layers[self.layout.config.n_layers :]

    def commit(self) -> None:
        """Make every position so far final; drop rows only needed for truncation."""
        self.committed = self.num_tokens
        for layer in self.main_layers:
            layer.commit(self.num_tokens)
        for layer in self.mtp_layers:
            layer.commit(self.mtp_pairs)
        keep = self.num_tokens - self.layout.config.window_size - 1
        self.mtp_hidden.trim_front(keep)
        self.recent_tokens.trim_front(keep)

    def truncate(self, position: int) -> None:
        """Roll back to `position` (committed <= position <= num_tokens), as if later tokens never came."""
        if not self.committed <= position <= self.num_tokens:
            raise ValueError(f"can only truncate within the uncommitted tail [{self.committed}, {self.num_tokens}], "
                             f"got {position}")
        for layer in self.main_layers:
            layer.truncate(position)
        self.mtp_pairs = min(self.mtp_pairs, max(position - 1, 0))
        for layer in self.mtp_layers:
            if self.mtp_pairs < layer.window.start:  # it caught up past this point: let it catch up again
                layer.window.clear(self.mtp_pairs)
            else:
                layer.truncate(self.mtp_pairs)
        self.mtp_hidden.truncate(position)
        self.recent_tokens.truncate(position)
        self.num_tokens = position

    def nbytes(self) -> dict[str, int]:
        """Exact bytes held, by category (whole pages for paged streams)."""
        totals: dict[str, int] = {}
        for layer in self.layers:
            for key, value in layer.nbytes().items():
                totals[key] = totals.get(key, 0) + value
        totals["mtp_inputs"] = self.mtp_hidden.nbytes() + self.recent_tokens.nbytes()
        totals["total"] = sum(totals.values())
        return totals

    def shared_page_bytes(self) -> int:
        """Bytes of pages this state holds together with checkpoints or other states (counted once elsewhere)."""
        return sum(paged.shared_nbytes() for layer in self.layers for paged in layer.paged())

    def _stores(self) -> dict[str, RowLog | PagedRows]:
        stores: dict[str, RowLog | PagedRows] = {"mtp_hidden": self.mtp_hidden, "recent_tokens": self.recent_tokens}
        for i, layer in enumerate(self.layers):
            for name in ("window", "comp", "index_comp", "entries", "index_keys"):
                store = getattr(layer, name)
                if store is not None:
                    stores[f"{i}.{name}"] = store
        return stores

    def snapshot(self) -> StateSnapshot:
        snap = StateSnapshot(self.num_tokens, self.committed, self.mtp_pairs, sampling=self.sampling)
        for key, store in self._stores().items():
            if isinstance(store, RowLog):
                snap.tensors[key] = (store.start, store.rows(store.start, store.end).clone())
            else:
                snap.tensors[key] = (0, store.view().clone())
        return snap

    def share(self) -> SharedState:
        """A checkpoint that shares this state's pages (see SharedState): eight requests that adopt it hold its
        full pages once."""
        logs, pages = {}, {}
        for key, store in self._stores().items():
            if isinstance(store, RowLog):
                logs[key] = (store.start, store.rows(store.start, store.end).clone())
            else:
                pages[key] = store.share()
        return SharedState(self.num_tokens, self.committed, self.mtp_pairs, logs, pages, self.sampling)

    def adopt(self, shared: SharedState) -> None:
        """Become the state `shared` was taken of: its pages held by reference, its row logs copied."""
        stores = self._stores()
        if set(stores) != set(shared.logs) | set(shared.pages):
            raise ValueError("checkpoint was taken from a state of a different layout")
        for key, store in stores.items():
            if isinstance(store, RowLog):
                start, rows = shared.logs[key]
                store.reset(start, rows)
            else:
                store.adopt(shared.pages[key])
        self.num_tokens, self.committed, self.mtp_pairs = shared.num_tokens, shared.committed, shared.mtp_pairs
        self.sampling = shared.sampling

    def restore(self, snap: StateSnapshot) -> None:
        stores = self._stores()
        if set(stores) != set(snap.tensors):
            raise ValueError("snapshot was taken from a state of a different layout")
        for key, store in stores.items():
            start, rows = snap.tensors[key]
            if isinstance(store, RowLog):
                store.reset(start, rows)
            else:
                store.reset(rows)
        self.num_tokens, self.committed, self.mtp_pairs = snap.num_tokens, snap.committed, snap.mtp_pairs
        self.sampling = snap.sampling


__all__ = ["CSA", "HCA", "LayerState", "SequenceState", "SharedState", "StateSnapshot", "WINDOW"]
