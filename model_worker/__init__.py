"""DeepSeek-V4 model worker: the engine (model, paged streaming state, sampling, checkpoints, chat encoding)."""
