"""Agent frameworks on the platform's gRPC APIs, each an optional extra (`langchain`)."""
