"""The embedded platform's settings: environment variables `DSV4_EMBEDDED_*` (or a settings file), flags over them.
Each service it starts is configured through that service's own settings; these say only where and what."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class EmbeddedSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DSV4_EMBEDDED_", env_file=None, extra="ignore")

    data_dir: str = Field("data", description="where every service keeps its state: SQLite databases, the session "
                          "store, the embedded broker, job results, uploaded files, and logs/")
    host: str = Field("127.0.0.1", description="address every service serves on")
    worker_port: int = Field(50051, ge=0, description="the model worker's gRPC port; 0: any free port")
    jobs_port: int = Field(50061, ge=0, description="the jobs service's gRPC port; 0: any free port")
    agent_port: int = Field(50071, ge=0, description="the agent service's gRPC port; 0: any free port")
    gateway_port: int = Field(8000, ge=0, description="the OpenAI-compatible gateway's HTTP port; 0: any free port")
    config: str = Field("tiny", description="the model worker's named config (random weights without a checkpoint)")
    checkpoint: str | None = Field(None, description="a DeepSeek-V4 checkpoint directory for the model worker")
    celery_concurrency: int = Field(4, gt=0, description="batch requests the Celery worker runs at once (threads)")
    start_timeout_s: float = Field(300.0, gt=0, description="how long a service may take to start")
    demo: bool = Field(True, description="run the guided demo of the three user journeys once everything serves")
    exit_after_demo: bool = Field(False, description="stop everything when the demo ends (scripts, tests)")
