"""Training batches: rendered traces packed into rows of one length, deterministic from (seed, step).

Each row is whole traces laid end to end (each starts with its own BOS); the loss mask marks the replies' tokens.
The families are drawn in fixed proportions; the trace seeds come from the training range only (below
`EVAL_SEED_BASE`), and evaluation sets drop any trace training could render (`data.held_out`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from foundation.chat import Tokenizer, load_tokenizer
from foundation.chat.protocol import EOS_ID
from training.data import FAMILIES, fingerprint, generate, render
from training.data.traces import EVAL_SEED_BASE, MODES
from training.vocab import VocabSubset

MIX = {"calculator": 3, "memory": 2, "needle": 2, "json": 1, "parallel": 1, "decline": 1}


@dataclass
class Batch:
    token_ids: torch.Tensor  # [B, T]
    loss_mask: torch.Tensor  # [B, T] bool: the tokens to predict


class Batches:
    """With a `vocab`, a trace holding an id outside it is skipped (about 1 in 1,000: a rare digit group), so that
    every batch is exactly the compact model's data."""

    def __init__(self, seed: int, vocab: VocabSubset | None = None, tokenizer: Tokenizer | None = None) -> None:
        self.seed, self.vocab, self.tokenizer = seed, vocab, tokenizer or load_tokenizer()
        self.drawn: set[str] | None = None  # a set here collects each drawn trace's fingerprint (evaluation sets)

    def _trace(self, rng: random.Random, length: int) -> tuple[list[int], list[bool]]:
        while True:
            family = rng.choices(list(MIX), weights=list(MIX.values()))[0]
            lines = rng.randint(8, max(8, length // 40)) if family == "needle" else None
            trace = generate(family, rng.randrange(EVAL_SEED_BASE), mode=rng.choice(MODES), needle_lines=lines)
            rendered = render(trace, self.tokenizer)
            if self.vocab is None or self.vocab.knows(rendered.token_ids):
                break
        if self.drawn is not None:
            self.drawn.add(fingerprint(rendered.token_ids))
        return rendered.token_ids, rendered.loss_mask

    def batch(self, step: int, rows: int, length: int) -> Batch:
        """Rows of whole traces while they fit (a trace longer than a row is cut), padded after the last one with
        EOS outside the loss; a trace that no longer fits opens the next row."""
        rng = random.Random(f"{self.seed}:{step}")
        ids, masks, pending = [], [], None
        while len(ids) < rows:
            row, mask = [], []
            while True:
                tokens, loss = pending or self._trace(rng, length)
                pending = None
                if row and len(row) + len(tokens) > length:
                    pending = tokens, loss
                    break
                row, mask = (row + tokens)[:length], (mask + loss)[:length]
                if len(row) == length:
                    break
            ids.append(row + [EOS_ID] * (length - len(row)))
            masks.append(mask + [False] * (length - len(mask)))
        return Batch(torch.tensor(ids), torch.tensor(masks))


def used_ids(seed: int, traces_per_family: int = 200, tokenizer: Tokenizer | None = None) -> set[int]:
    """The ids a sample of the training data uses (every family and mode), plus every id of the chat protocol's
    markers: the vocabulary subset training computes logits over."""
    tokenizer = tokenizer or load_tokenizer()
    ids: set[int] = set()
    for family in FAMILIES:
        for i in range(traces_per_family):
            mode = MODES[i % len(MODES)]
            ids.update(render(generate(family, seed * 1_000_003 + i, mode=mode), tokenizer).token_ids)
    return ids
