"""What every typed gRPC client of the platform does, blocking (`SyncRpcClient`) and asyncio (`AsyncRpcClient`): one
channel, the metadata (bearer key, the caller's trace context), deadlines, and calls retried on UNAVAILABLE where
repeating them cannot duplicate an effect (policy.py). The blocking one is thread-safe (grpc channels are), so one
client serves a whole process; an asyncio one belongs to the event loop it was made in (as a grpc.aio channel does)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import grpc

from foundation.clients.worker import errors, policy


class RpcClient:
    """`stub_class` is the generated stub of the service; `timeout` the default deadline of every call in seconds
    (None: none). Failed calls raise `errors.WorkerError` subclasses. `channels` is grpc or grpc.aio."""

    channels: Any = grpc

    def __init__(
        self,
        target: str,
        stub_class: type,
        *,
        api_key: str | None = None,
        timeout: float | None = None,
        retries: int = 3,
        backoff: float = 0.2,
        channel_options: Sequence[tuple[str, Any]] | None = None,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.target = target
        options = policy.channel_options(channel_options)
        if credentials is None:
            self._channel = self.channels.insecure_channel(target, options=options)
        else:
            self._channel = self.channels.secure_channel(target, credentials, options=options)
        self._stub = stub_class(self._channel)
        self._metadata = policy.auth_metadata(api_key)
        self._timeout = timeout
        self._retry = policy.RetryPolicy(retries, backoff)

    def _deadline(self, timeout: float | None) -> policy.Deadline:
        return policy.Deadline(self._timeout if timeout is None else timeout)


class SyncRpcClient(RpcClient):
    """The blocking client: thread-safe, one per process."""

    def close(self) -> None:
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- calls ---------------------------------------------------------------------------------------------------

    def _unary(self, name: str, request: Any, timeout: float | None, *, retry: bool = True) -> Any:
        method = getattr(self._stub, name)
        deadline, metadata = self._deadline(timeout), policy.call_metadata(self._metadata)
        attempt = 0
        while True:
            try:
                return method(request, timeout=deadline.remaining(), metadata=metadata)
            except grpc.RpcError as error:
                delay = self._retry.delay(error, attempt, deadline) if retry else None
                if delay is None:
                    raise errors.from_rpc_error(error) from error
            time.sleep(delay)
            attempt += 1

    def _stream(self, name: str, request: Any, timeout: float | None) -> Iterator[Any]:
        """The responses of a server stream, retried only while none has arrived; closing it cancels the call."""
        method = getattr(self._stub, name)
        deadline, metadata = self._deadline(timeout), policy.call_metadata(self._metadata)
        attempt = 0
        while True:
            call = method(request, timeout=deadline.remaining(), metadata=metadata)
            started = False
            try:
                for response in call:
                    started = True
                    yield response
                return
            except grpc.RpcError as error:
                delay = None if started else self._retry.delay(error, attempt, deadline)
                if delay is None:
                    raise errors.from_rpc_error(error) from error
            finally:
                call.cancel()  # a no-op once finished; stops the generation when the caller stops reading
            time.sleep(delay)
            attempt += 1


class AsyncRpcClient(RpcClient):
    """`SyncRpcClient`'s twin on grpc.aio: the same arguments, its calls awaited. Create it inside the event loop that
    uses it."""

    channels = grpc.aio

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _unary(self, name: str, request: Any, timeout: float | None, *, retry: bool = True) -> Any:
        method = getattr(self._stub, name)
        deadline, metadata = self._deadline(timeout), policy.call_metadata(self._metadata)
        attempt = 0
        while True:
            try:
                return await method(request, timeout=deadline.remaining(), metadata=metadata)
            except grpc.RpcError as error:
                delay = self._retry.delay(error, attempt, deadline) if retry else None
                if delay is None:
                    raise errors.from_rpc_error(error) from error
            await asyncio.sleep(delay)
            attempt += 1

    async def _stream(self, name: str, request: Any, timeout: float | None) -> AsyncIterator[Any]:
        """The responses of a server stream, retried only while none has arrived; closing it cancels the call."""
        method = getattr(self._stub, name)
        deadline, metadata = self._deadline(timeout), policy.call_metadata(self._metadata)
        attempt = 0
        while True:
            call = method(request, timeout=deadline.remaining(), metadata=metadata)
            started = False
            try:
                async for response in call:
                    started = True
                    yield response
                return
            except grpc.RpcError as error:
                delay = None if started else self._retry.delay(error, attempt, deadline)
                if delay is None:
                    raise errors.from_rpc_error(error) from error
            finally:
                call.cancel()  # a no-op once finished; stops the generation when the caller stops reading
            await asyncio.sleep(delay)
            attempt += 1
