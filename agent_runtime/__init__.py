"""The agent runtime: tool loops over persistent model-worker sessions, with the transcript in SQL, as a gRPC service
(`python -m agent_runtime serve`, `agent_runtime.client.AgentClient`) or a library (`agent_runtime.loop.AgentLoop`)."""
