"""`n` > 1: several choices for one request, each its own sequence on the engine (with continuous batching they
decode together), merged into one stream whose events say which choice they belong to."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace

from fmstack.core.errors import InvalidRequest
from fmstack.engines.base import Engine, Event, Prepared

_DONE = object()


def choices(engine: Engine, prepared: Prepared, n: int, queue_size: int) -> AsyncIterator[Event]:
    """Submit `n` copies of `prepared` and merge them (a full queue fails the whole call, nothing left running).

    With a seed, choice i samples with seed + i, so the choices differ and the whole response is reproducible.
    """
    if n > queue_size:
        raise InvalidRequest(
            f"n is {n}, more choices than this server queues per model ({queue_size}, FMSTACK_QUEUE_SIZE).", param="n"
        )
    seed = prepared.request.seed
    copies = [
        replace(prepared, request=replace(prepared.request, seed=seed + i)) if seed is not None else prepared
        for i in range(n)
    ]
    return _merge(engine, copies)


async def _merge(engine: Engine, copies: list[Prepared]) -> AsyncIterator[Event]:
    queue: asyncio.Queue = asyncio.Queue()
    tasks: list[asyncio.Task] = []
    try:
        tasks = [asyncio.create_task(_pump(i, engine, prepared, queue)) for i, prepared in enumerate(copies)]
        done = 0
        while done < len(tasks):
            item = await queue.get()
            if item is _DONE:
                done += 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:  # a failure, a cancel or a reader gone: stop every choice still decoding
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _pump(index: int, engine: Engine, prepared: Prepared, queue: asyncio.Queue) -> None:
    """One choice into the merged queue. It submits its own sequence, so a choice cancelled before it started has
    queued nothing, and one cancelled later stops its generation (the stream is read from the first step on)."""
    try:
        events = engine.stream(prepared)
        async with contextlib.aclosing(events):
            async for event in events:
                event.index = index
                queue.put_nowait(event)
        queue.put_nowait(_DONE)
    except Exception as exc:
        queue.put_nowait(exc)
