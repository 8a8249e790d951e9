"""Checkpoints: random initialization, the official and transformers safetensors layouts, fingerprints."""
