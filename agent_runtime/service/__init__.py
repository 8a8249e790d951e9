"""The agent runtime as a gRPC service (protos/dsv4/agent/v1)."""
