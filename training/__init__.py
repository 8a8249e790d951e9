"""Training a small DeepSeek-V4 with the seed's recipe (issue 23): the optimizer split (Muon for matrices with the
hybrid Newton-Schulz, AdamW for the rest) and, as they land, the training forward, data and runs. Sits above the
model worker: it trains the engine's own modules; nothing below imports it."""
