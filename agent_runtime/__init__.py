"""The agent runtime: tool loops over persistent model-worker sessions, with the transcript in SQL, as a gRPC service
(`python -m agent_runtime serve`, `foundation.clients.agent.AgentClient`) or a library
(`agent_runtime.loop.AgentLoop`)."""
