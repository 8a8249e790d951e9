"""The gRPC model worker: the API service, its runtime (engine thread, session tiers, tenants) and `serve`."""
