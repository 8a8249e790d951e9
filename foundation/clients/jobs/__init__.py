"""Typed clients of the jobs service, blocking (`JobsClient`) and asyncio (`AsyncJobsClient`): dataclasses in and
out (types.py)."""

from foundation.clients.jobs.async_client import AsyncJobsClient
from foundation.clients.jobs.sync_client import JobsClient, JobsTlsSettings
from foundation.clients.jobs.types import (
    Batch,
    BatchPage,
    InvalidLine,
    JobRequest,
    RequestCounts,
    RequestProgress,
    ResultLine,
)

__all__ = ["AsyncJobsClient", "Batch", "BatchPage", "InvalidLine", "JobRequest", "JobsClient", "JobsTlsSettings",
           "RequestCounts", "RequestProgress", "ResultLine"]
