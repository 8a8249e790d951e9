"""Several choices of one prompt (`n`), shared by chat completions and completions: started so that the prompt is
computed once up to its last prefix checkpoint, their events merged into one stream, their usage summed."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

from foundation.clients.worker import Final, Sampling, Usage
from foundation.clients.worker.errors import WorkerError
from services.gateway.state import Gateway

Stream = tuple[AsyncIterator, Any]  # a generation's events and its first event


async def start_choices(gw: Gateway, affinity: str, n: int, sampling: Sampling, arguments: dict) -> list[Stream]:
    """The choices' generations: the first until its first event (its prompt computed, its checkpoints kept), then
    the others at once, which find them in the worker's prefix cache (a `seed` gives choice i the seed + i)."""
    def sampling_of(i: int) -> Sampling:
        return sampling if sampling.seed is None else dataclasses.replace(sampling, seed=sampling.seed + i)

    started = [await gw.start_stateless(affinity, sampling=sampling, **arguments)]
    try:
        for stream in await asyncio.gather(*(gw.start_stateless(affinity, sampling=sampling_of(i), **arguments)
                                             for i in range(1, n)), return_exceptions=True):
            if isinstance(stream, BaseException):
                raise stream
            started.append(stream)
    except BaseException:
        await asyncio.gather(*(events.aclose() for events, _ in started), return_exceptions=True)
        raise
    return started


def choices_usage(finals: list[Final]) -> Usage:
    """The choices' usage together: the prompt once, what each computed and generated summed."""
    return Usage(prompt_tokens=finals[0].usage.prompt_tokens, reused_tokens=finals[0].usage.reused_tokens,
                 **{name: sum(getattr(f.usage, name) for f in finals)
                    for name in ("prefilled_tokens", "completion_tokens", "reasoning_tokens")})


async def merged(streams: list[Stream]) -> AsyncIterator[tuple[int, Any]]:
    """(choice index, event) as each choice's events come, its Final last; a worker error mid-stream comes as the
    event (the caller ends there). Leaving early, or at the end, stops every choice still running."""
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(index: int, events: AsyncIterator, event: Any) -> None:
        try:
            while True:
                await queue.put((index, event))
                if isinstance(event, Final):
                    return
                event = await anext(events)
        except WorkerError as error:
            await queue.put((index, error))

    pumps = [asyncio.create_task(pump(i, *stream)) for i, stream in enumerate(streams)]
    try:
        ended = 0
        while ended < len(streams):
            index, event = await queue.get()
            ended += isinstance(event, Final)
            yield index, event
    finally:
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        await asyncio.gather(*(events.aclose() for events, _ in streams), return_exceptions=True)
