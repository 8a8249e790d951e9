"""The model worker's settings: environment variables `DSV4_WORKER_*` (or a settings file), command-line flags of
`python -m model_worker serve` over both (foundation/settings.py makes them; `--api-keys` names `api_keys_file`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DSV4_WORKER_", env_file=None, extra="ignore",
                                      cli_shortcuts={"api-keys-file": "api-keys"})

    checkpoint: str | None = Field(None, description="checkpoint directory (default: random weights of `config`)")
    config: str = Field("tiny", description="named config (tiny, flash, pro) or a config.json")
    seed: int = Field(0, description="seed of the random weights when there is no checkpoint")
    numerics: Literal["official", "reference"] = Field("official", description="official (bf16, FP8 KV) or "
                                                       "reference (float32)")
    host: str = Field("127.0.0.1", description="address to serve on")
    port: int = Field(50051, description="gRPC port; 0: any free port (printed)")
    advertise: str | None = Field(None, description="the HOST:PORT clients reach this worker at, as announced to "
                                  "the registry (default: host:port; this machine's hostname when host is 0.0.0.0)")
    registry: str | None = Field(None, description="worker registry: redis://HOST:PORT/DB (heartbeats, loads and "
                                 "hot sessions); none: clients use their configured addresses")
    heartbeat_seconds: float = Field(2.0, gt=0, description="registry heartbeat; a worker silent for three is gone")
    session_store: str = Field("sessions", description="cold tier: file://DIR, a directory, any fsspec URL, or "
                               "redis://")
    warm_store: str | None = Field(None, description="warm tier in front of it, e.g. redis://127.0.0.1:6379/0")
    api_keys_file: str | None = Field(None, description="JSON file {key: tenant}; without it every caller is the "
                                      "default tenant")
    hot_budget_gb: float = Field(4.0, gt=0, description="GiB of session state kept hot in this process")
    prefix_cache_gb: float = Field(1.0, ge=0, description="GiB of prefix checkpoints kept hot (automatic prefix "
                                   "caching for requests without a session); 0 turns it off")
    prefix_checkpoint_every: int = Field(2048, gt=0, description="a prefix checkpoint every this many tokens of a "
                                         "long input, besides the end of each input and output")
    token_budget: int = Field(512, gt=0, description="tokens per engine step")
    max_running: int = Field(64, gt=0, description="requests in the engine's batch at once")
    max_waiting: int = Field(1024, ge=0, description="requests queued for admission before RESOURCE_EXHAUSTED")
    kv_budget_gb: float | None = Field(None, gt=0, description="admit requests while their KV state fits in this "
                                       "many GiB")
    max_requests_per_tenant: int | None = Field(None, gt=0, description="requests a tenant may run at once")
    tokens_per_second_per_tenant: float | None = Field(None, gt=0, description="token bucket per tenant (10 s of "
                                                       "burst)")
    max_input_bytes: int = Field(16 << 20, gt=0, description="bytes of one request's messages, tools, JSON "
                                 "schemas, system prompt and text (Generate, CreateSession, AppendSession, Tokenize); "
                                 "default 16 MiB, INVALID_ARGUMENT past it")
    max_schema_bytes: int = Field(64 << 10, gt=0, description="bytes of one request's tool definitions and response "
                                  "format together (they compile into a grammar); default 64 KiB")
    max_messages: int = Field(10_000, gt=0, description="messages in one request; default 10,000")
    max_tools: int = Field(128, gt=0, description="tools in one request or session; default 128")
    max_tool_name_chars: int = Field(64, gt=0, description="characters of a tool's or a tool call's name (letters, "
                                     "digits, '_', '-', '.'); default 64")
    max_json_depth: int = Field(64, gt=0, le=256, description="nesting of a tool's parameters, a JSON schema or a "
                                "tool call's arguments; default 64")
    max_stop_strings: int = Field(16, ge=0, description="stop strings per request; default 16")
    max_stop_string_chars: int = Field(1024, gt=0, description="characters of one stop string; default 1,024")
    max_stop_token_ids: int = Field(1024, ge=0, description="stop token ids per request; default 1,024")
    min_commit_every: int = Field(32, gt=0, description="the least commit_every a request may ask for (generated "
                                  "tokens between commits; each writes the session's tail); default 32, "
                                  "INVALID_ARGUMENT below it")
    commit_queue_gb: float = Field(1.0, gt=0, description="GiB of prepared commits waiting for the store; when full "
                                   "the engine waits for it (a store stalled for a minute fails the commit, "
                                   "UNAVAILABLE)")
    tenant_quota_gb: float | None = Field(None, gt=0, description="GiB of session values one tenant may store; "
                                          "commits and imports past it are RESOURCE_EXHAUSTED (default none: no cap)")
    session_ttl_hours: float | None = Field(720.0, ge=0, description="sessions unused this long (no request, open "
                                            "or commit) that no lease holds are deleted by the scheduled upkeep; "
                                            "default 720 (30 days), 0: never")
    collect_every_seconds: float | None = Field(3600.0, ge=0, description="each worker's session store upkeep "
                                                "period: it touches the sessions it used and drops stale hot copies, "
                                                "and one worker per period expires idle sessions and deletes values "
                                                "no commit names; at most a quarter of the TTL; default 3600, 0: "
                                                "never (then only the `sessions` command does)")
    warm_ttl_hours: float | None = Field(24.0, ge=0, description="warm tier values (warm_store) Redis forgets after "
                                         "this long unread and unwritten; the cold tier keeps everything; default "
                                         "24, 0: no TTL")
    import_max_bytes: int = Field(6 << 30, gt=0, description="bytes an ImportSession may stream (compressed, as "
                                  "sent; also at most what is left of the tenant's quota); default 6 GiB, "
                                  "RESOURCE_EXHAUSTED past it, the rest unread")
    import_max_uncompressed_bytes: int = Field(6 << 30, gt=0, description="bytes an imported export may unpack to "
                                               "(tar headers included, counted while decompressing); default 6 GiB "
                                               "(a full 1M-token pro session is ~4.9 GiB), RESOURCE_EXHAUSTED past it")
    import_max_members: int = Field(10_000, gt=0, description="files in an imported export; default 10,000 (a "
                                    "1M-token session has ~4,200), RESOURCE_EXHAUSTED past it")
    import_max_member_bytes: int = Field(64 << 20, gt=0, description="bytes of one file of an imported export; "
                                         "default 64 MiB, RESOURCE_EXHAUSTED past it")
    list_max_page_size: int = Field(1000, gt=0, description="session IDs per ListSessions page; default 1,000, "
                                    "INVALID_ARGUMENT past it")
    speculative: bool = Field(False, description="MTP speculative decoding: the MTP layer drafts each next token and "
                              "the main model verifies it in the same pass (replies unchanged)")
    constrained_decoding: bool = Field(True, description="enforce tool-call and response-format grammars while "
                                       "sampling; off, replies are the model's own and may not parse")
    tensor_parallel: int = Field(1, gt=0, description="split the model over N local ranks (gloo on CPU, NCCL on "
                                 "GPUs); across machines, start every rank with torch.distributed's env:// variables")
    threads: int = Field(32, gt=0, description="gRPC handler threads")
    metrics_port: int | None = Field(None, description="serve Prometheus metrics over HTTP on this port")
    trace_console: bool = Field(False, description="print OpenTelemetry spans (no collector needed)")
    tls_cert: str | None = Field(None, description="PEM certificate chain: serve TLS (with tls_key)")
    tls_key: str | None = Field(None, description="PEM private key of tls_cert")
    tls_client_ca: str | None = Field(None, description="PEM CA bundle: require client certificates it signed "
                                      "(mutual TLS)")
