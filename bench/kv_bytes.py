"""Per-sequence state bytes (KV pages, index keys, windows, compressor tails, MTP) for Flash and Pro, computed from the
engine's own StateLayout without allocating, compared with the reference doc's §3 formula and table, and checked
exactly against a real tiny-model state.  Run: `python -m bench.kv_bytes [--tiny-tokens N]`.
"""

from __future__ import annotations

import argparse
import time

import torch

from model_worker.config import CSA, FLASH, HCA, PRO, WINDOW
from model_worker.numerics import OFFICIAL, REFERENCE
from model_worker.state import PAGE_ENTRIES, StateLayout

MODELS = {"flash": FLASH, "pro": PRO}
SESSION_TOKENS = (131072, 1048576)
# Doc §3 table, row "same with FP4 indexer keys (64 + 4 = 68 B)" with 584-B KV entries: bytes/token for all main layers.
DOC_GROWTH_FP4 = {"flash": 3514, "pro": 5031}
MAX_REL_DIFF_AT_1M = 0.02
KINDS = (WINDOW, CSA, HCA)
CATEGORIES = ("window", "kv_pages", "index_pages", "compressor_tail", "mtp_inputs")  # SequenceState.nbytes() keys
CATEGORY_NAMES = ("window", "kv pages", "index pages", "compressor tails", "mtp inputs")


def rows_bytes(rows: int, width: int, dtype: torch.dtype) -> int:
    """Bytes of a [rows, width] tensor; a meta tensor gives the exact size without touching memory."""
    return torch.empty(rows, width, dtype=dtype, device="meta").nbytes


def paged_entries(entries: int) -> int:
    """Entries allocated for `entries` in use: the partial last page counts in full (as PagedRows.nbytes does)."""
    return -(-entries // PAGE_ENTRIES) * PAGE_ENTRIES


def layer_tokens(layout: StateLayout, layer_id: int, num_tokens: int, drafting: bool) -> int:
    """Positions a layer has seen: MTP layers consume pairs (h_i, token_{i+1}), one fewer than the main model, and
    only in a sequence that asks for drafts (speculative decoding)."""
    if layer_id < layout.config.n_layers:
        return num_tokens
    return max(num_tokens - 1, 0) if drafting else 0


def computed_layer_bytes(layout: StateLayout, layer_id: int, num_tokens: int, drafting: bool = True) -> dict[str, int]:
    """Bytes of one layer's state committed at `num_tokens`, keyed like LayerState.nbytes()."""
    config = layout.config
    kind, ratio = config.layer_type(layer_id), config.compress_ratios[layer_id]
    n = layer_tokens(layout, layer_id, num_tokens, drafting)
    # After commit the window keeps W-1 rows: the next query's window is itself plus the W-1 before it.
    out = {"window": rows_bytes(min(n, config.window_size - 1), layout.kv_width, layout.kv_dtype)}
    if kind == WINDOW:
        return out
    # Commit keeps the pending group, and for CSA also the previous group (its first halves feed the next entry).
    group_start = n // ratio * ratio
    keep_from = max(group_start - (ratio if kind == CSA else 0), 0)
    tail_rows = n - keep_from
    tail = rows_bytes(tail_rows, layout.compressor_width(kind), torch.float32)
    if kind == CSA:
        tail += rows_bytes(tail_rows, layout.compressor_width(CSA, index=True), torch.float32)
    out["compressor_tail"] = tail
    entries = paged_entries(n // ratio)
    out["kv_pages"] = rows_bytes(entries, layout.kv_width, layout.kv_dtype)
    if kind == CSA:
        out["index_pages"] = rows_bytes(entries, layout.index_key_width, layout.kv_dtype)
    return out


def mtp_input_bytes(layout: StateLayout, num_tokens: int) -> int:
    """The last window_size + 1 hidden streams (activation dtype) and token ids: what the MTP layer catches up from."""
    config = layout.config
    rows = min(num_tokens, config.window_size + 1) if config.n_mtp_layers else 0
    return rows_bytes(rows, config.hc_mult * config.dim, layout.numerics.act_dtype) + rows_bytes(rows, 1, torch.long)


def computed_state_bytes(layout: StateLayout, num_tokens: int, drafting: bool = True) -> dict[str, int]:
    """Bytes of a SequenceState committed at `num_tokens`, keyed like SequenceState.nbytes() (incl. "total")."""
    config = layout.config
    totals: dict[str, int] = {}
    for layer_id in range(config.n_layers + config.n_mtp_layers):
        for key, value in computed_layer_bytes(layout, layer_id, num_tokens, drafting).items():
            totals[key] = totals.get(key, 0) + value
    totals["mtp_inputs"] = mtp_input_bytes(layout, num_tokens)
    totals["total"] = sum(totals.values())
    return totals


def bytes_by_kind(layout: StateLayout, num_tokens: int) -> dict[str, tuple[int, int]]:
    """Per main-layer kind and "mtp" (its layers plus its inputs): (layer count, total bytes) at `num_tokens`."""
    config = layout.config
    out: dict[str, tuple[int, int]] = {}
    for layer_id in range(config.n_layers + config.n_mtp_layers):
        key = config.layer_type(layer_id) if layer_id < config.n_layers else "mtp"
        count, total = out.get(key, (0, 0))
        out[key] = (count + 1, total + sum(computed_layer_bytes(layout, layer_id, num_tokens).values()))
    if config.n_mtp_layers:
        count, total = out["mtp"]
        out["mtp"] = (count, total + mtp_input_bytes(layout, num_tokens))
    return out


def growth_per_token(layout: StateLayout) -> dict[str, float]:
    """Asymptotic bytes per context token: per layer for each kind, and "total" over all layers (incl. MTP)."""
    config = layout.config
    kv_row = rows_bytes(1, layout.kv_width, layout.kv_dtype)
    index_row = rows_bytes(1, layout.index_key_width, layout.kv_dtype)
    per_layer = []
    for layer_id, kind in enumerate(config.layer_types):
        ratio = config.compress_ratios[layer_id]
        per_layer.append((kind, 0.0 if kind == WINDOW else (kv_row + (index_row if kind == CSA else 0)) / ratio))
    out = {kind: next((g for k, g in per_layer if k == kind), 0.0) for kind in KINDS}
    out["total"] = sum(g for _, g in per_layer)
    return out


def doc_formula_bytes(layout: StateLayout, num_tokens: int) -> int:
    """Doc §3: Σ_main min(N,W)·kv_row + Σ_CSA floor(N/4)·(kv_row + idx_row) + Σ_HCA floor(N/128)·kv_row."""
    config = layout.config
    kv_row = rows_bytes(1, layout.kv_width, layout.kv_dtype)
    index_row = rows_bytes(1, layout.index_key_width, layout.kv_dtype)
    total = 0
    for layer_id in range(config.n_layers):
        kind, ratio = config.layer_type(layer_id), config.compress_ratios[layer_id]
        total += min(num_tokens, config.window_size) * kv_row
        if kind != WINDOW:
            total += num_tokens // ratio * (kv_row + (index_row if kind == CSA else 0))
    return total


@torch.no_grad()  # inference: the model's forward leaves that to its callers
def measure_tiny(num_tokens: int, chunk: int = 512, seed: int = 0) -> tuple[dict[str, int], dict[str, int]]:
    """Prefill the tiny model (random weights, official numerics) in committed chunks: (real nbytes, computed)."""
    from model_worker.engine.loading import load_model
    from model_worker.model import ForwardBatch

    model = load_model(None, "tiny", seed=seed, numerics="official")
    state = model.new_state()
    ids = torch.randint(0, model.config.vocab_size, (num_tokens,), generator=torch.Generator().manual_seed(seed))
    for start in range(0, num_tokens, chunk):
        # logits="none": the 129K-vocab head is irrelevant to the state and the slowest part of a tiny pass.
        model(ForwardBatch.single(ids[start : start + chunk], state, logits="none", draft_logits=True))
        state.commit()
    return state.nbytes(), computed_state_bytes(model.layout, num_tokens)


def human(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.3f} {unit}"
    return f"{n:.0f} B"


def header(*columns: str) -> list[str]:
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def growth_table() -> list[str]:
    lines = header("model", "numerics", "KV row", "index row", "window-only B/tok/layer", "CSA B/tok/layer",
                   "HCA B/tok/layer", "all layers B/tok", "doc §3 (FP4 idx)", "match")
    for name, config in MODELS.items():
        for numerics in (REFERENCE, OFFICIAL):
            layout = StateLayout(config, numerics)
            g = growth_per_token(layout)
            for kind in KINDS:  # cross-check against the layout's own accounting
                assert g[kind] == layout.growth_bytes_per_token(kind), (name, numerics.name, kind)
            kv_row = rows_bytes(1, layout.kv_width, layout.kv_dtype)
            idx_row = rows_bytes(1, layout.index_key_width, layout.kv_dtype)
            doc, match = "n/a (fp32)", "-"
            if numerics.quantize:
                doc = str(DOC_GROWTH_FP4[name])
                match = "yes" if abs(g["total"] - DOC_GROWTH_FP4[name]) < 0.5 else "NO"
                assert match == "yes", (name, g["total"], DOC_GROWTH_FP4[name])
            lines.append(f"| {name} | {numerics.name} | {kv_row} B | {idx_row} B | {g[WINDOW]:g} | {g[CSA]:g} | "
                         f"{g[HCA]:g} | {g['total']:g} | {doc} | {match} |")
    return lines


def kind_table() -> list[str]:
    per_size = [f"{what} @{n // 1024}K" for n in SESSION_TOKENS for what in ("per layer", "all")]
    lines = header("model", "numerics", "kind", "layers", *per_size)
    for name, config in MODELS.items():
        for numerics in (REFERENCE, OFFICIAL):
            layout = StateLayout(config, numerics)
            per_n = [bytes_by_kind(layout, n) for n in SESSION_TOKENS]
            for kind in (*KINDS, "mtp"):
                if kind not in per_n[0]:
                    continue
                count = per_n[0][kind][0]
                cells = " | ".join(f"{human(b[kind][1] / count)} | {human(b[kind][1])}" for b in per_n)
                lines.append(f"| {name} | {numerics.name} | {kind} | {count} | {cells} |")
    return lines


def session_table() -> list[str]:
    lines = header("model", "numerics", "tokens", *CATEGORY_NAMES, "total", "total (bytes)", "doc formula (bytes)",
                   "ours − doc", "rel. diff")
    for name, config in MODELS.items():
        for numerics in (REFERENCE, OFFICIAL):
            layout = StateLayout(config, numerics)
            for n in SESSION_TOKENS:
                ours, doc = computed_state_bytes(layout, n), doc_formula_bytes(layout, n)
                rel = (ours["total"] - doc) / doc
                if n == SESSION_TOKENS[-1]:
                    assert abs(rel) < MAX_REL_DIFF_AT_1M, (name, numerics.name, rel)
                cats = " | ".join(human(ours[k]) for k in (*CATEGORIES, "total"))
                lines.append(f"| {name} | {numerics.name} | {n} | {cats} | {ours['total']} | {doc} | "
                             f"{human(ours['total'] - doc)} | {100 * rel:+.4f}% |")
    return lines


def tiny_table(num_tokens: int) -> list[str]:
    started = time.perf_counter()
    real, computed = measure_tiny(num_tokens)
    seconds = time.perf_counter() - started
    assert real == computed, f"computed {computed} != real {real}"
    cats = " | ".join(str(real.get(k, 0)) for k in CATEGORIES)
    row = (f"| tiny (random weights, {seconds:.0f} s) | official | {num_tokens} | {cats} | {real['total']} | "
           f"{computed['total']} | {'yes' if real == computed else 'NO'} |")
    return [*header("model", "numerics", "tokens", *CATEGORY_NAMES, "real nbytes()", "computed", "equal"), row]


FOOTNOTE = """
Notes. "doc formula" is §3's Σ_main min(N,128)·kv_row + Σ_CSA ⌊N/4⌋·(kv_row+idx_row) + Σ_HCA ⌊N/128⌋·kv_row with
our row sizes (reference: 512·4 B / 128·4 B fp32; official: 584 B / 68 B). Ours is a state committed at N tokens and
differs by: (a) window rows: W−1 = 127 per layer, not 128 (the next query sees itself plus 127 earlier rows), −1 row
per main layer; (b) the MTP layer's own window (127 rows, counted as for a sequence that drafts: MTP advances only
when drafts are asked for); (c) compressor tails kept in fp32
(kv+score): CSA previous + pending group (4..7 rows of 2·2·512 plus the indexer's 2·2·128), HCA pending ⌊N mod 128⌋
rows (0 at these N); (d) the MTP inputs: the last W+1 hidden streams (hc_mult·dim, activation dtype) and token
ids, all the MTP layer needs to catch up; (e) page rounding to 64 entries, 0 here because 128K
and 1M are multiples of 256 (CSA) and 8192 (HCA) tokens. All are fixed per sequence, so the difference shrinks as
1/N. Reference numerics are fp32, twice the doc's bf16 "official reference" row (6880 / 9848 B/token).
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tiny-tokens", type=int, default=2048, help="tokens to prefill in the real tiny check")
    args = parser.parse_args(argv)
    sections = [("Growth per context token", growth_table()), ("Per layer kind", kind_table()),
                ("Per session (one sequence, committed)", session_table()),
                ("Real allocation check (tiny, chunks of 512, commit each)", tiny_table(args.tiny_tokens))]
    for title, lines in sections:
        print(f"### {title}\n")
        print("\n".join(lines) + "\n")
    print(FOOTNOTE.strip())


if __name__ == "__main__":
    main()
