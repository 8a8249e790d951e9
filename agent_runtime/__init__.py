"""The agent runtime: tool loops over persistent model-worker sessions (in progress: the tool registry and its
built-in tools so far)."""
