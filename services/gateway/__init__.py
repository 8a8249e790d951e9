"""The OpenAI-compatible HTTP gateway: chat completions, responses on persistent sessions, batches and files over the
jobs service, models; Bearer keys to tenants; every generation through the platform's typed clients."""
