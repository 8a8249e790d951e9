"""Synthetic agent traces for training and evaluation, rendered by the platform's own chat encoding.

`traces.py` generates conversations (calculator arithmetic, remember/recall across turns, a fact planted far back in
a long history, replies under a JSON schema, parallel calls, declining when no tool fits); `render.py` turns one into
token ids and a loss mask through `foundation.chat.ChatSession`, exactly as a served session renders it. Splits: a
trace's seed and its phrasing set decide it; evaluation sets use seeds and phrasings that training never sees, and
their rendered tokens are checked absent from training by hash (`render.fingerprint`).
"""

from training.data.render import RenderedTrace, fingerprint, held_out, render
from training.data.traces import FAMILIES, Trace, Turn, generate

__all__ = ["FAMILIES", "RenderedTrace", "Trace", "Turn", "fingerprint", "generate", "held_out", "render"]
