"""What every process of the platform shares, and nothing of the engine (no torch): tenants and API keys
(`tenancy`, `auth`), identifier checks (`ids`), the error table (`errors`), rate and size limits (`limits`, `wire`),
tracing, settings and their command lines, metrics, readiness and gRPC serving, SQL plumbing (`sql`, `storable`),
blob stores (`blobs`), the DeepSeek-V4 chat encoding (`chat`), sampling parameters, the worker registry and the gRPC
clients of every service (`clients`)."""
