"""The model trained here: `tiny`'s shape (dim 256, four layers: window-only, CSA, HCA, CSA, and an MTP layer) with
the published head dimension 512, so that llama.cpp runs the same weights (bench/vs_llamacpp.py)."""

from __future__ import annotations

import dataclasses

from model_worker.config import TINY

AGENT_SMALL = dataclasses.replace(TINY, head_dim=512)
