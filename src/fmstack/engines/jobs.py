"""Between callers and a local model: a bounded queue of jobs, each read back as an async stream of events.

A worker thread owns the model; callers never touch it. `JobQueue` is the hand-over both workers share
(`llamacpp_batch.BatchRunner` and `transformers_batch.BatchRunner`, which step many jobs at once) and `Outbox` the
way back. A bounded queue turns overload into an immediate `QueueFull` (HTTP 429) instead of unbounded waiting,
and closing a stream (a client gone, a timeout) cancels its job.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fmstack.core.errors import QueueFull
from fmstack.engines.base import Event, Prepared

END = object()  # the last item of every job's stream


@dataclass(eq=False)
class Job:
    prepared: Prepared
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancel: threading.Event = field(default_factory=threading.Event)


class Outbox:
    """Events made by a worker, handed to each caller's event loop in one wake-up per flush.

    Waking an event loop costs a write to its self-pipe and a pass of its loop; at eight streams one flush per
    decode step instead of one per token keeps the event-loop thread off the cores the model needs.
    """

    def __init__(self) -> None:
        self._items: dict[asyncio.AbstractEventLoop, list[tuple[Job, object]]] = {}

    def put(self, job: Job, item: object) -> None:
        self._items.setdefault(job.loop, []).append((job, item))

    def flush(self) -> None:
        items, self._items = self._items, {}
        for loop, batch in items.items():
            with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody is left to read
                loop.call_soon_threadsafe(_deliver, batch)


def _deliver(batch: list[tuple[Job, object]]) -> None:
    for job, item in batch:
        job.out.put_nowait(item)


class JobQueue:
    """Jobs waiting for a worker; at most `max_queue` wait, the next one is refused with `QueueFull`."""

    def __init__(self, name: str, max_queue: int):
        self.name = name
        self.max_queue = max_queue
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._waiting = 0
        self._lock = threading.Lock()

    @property
    def waiting(self) -> int:
        return self._waiting

    def submit(self, prepared: Prepared) -> AsyncIterator[Event]:
        """Queue a request now (or raise `QueueFull`); the returned stream yields its events."""
        with self._lock:
            if self._waiting >= self.max_queue:
                raise QueueFull(self.name)
            self._waiting += 1
        job = Job(prepared, asyncio.get_running_loop())
        self._jobs.put(job)
        return _Stream(job)

    def get(self, block: bool) -> Job | None:
        """The next job not cancelled while it waited; None once closed. Raises `queue.Empty` when not blocking
        and nothing waits."""
        while True:
            job = self._jobs.get(block)
            if job is None:
                return None
            with self._lock:
                self._waiting -= 1
            if not job.cancel.is_set():
                return job

    def close(self) -> None:
        self._jobs.put(None)


class _Stream:
    """A job's events, read by its caller. Closing it cancels the job, also before its first event was read (an
    async generator that never started skips its `finally`, so a job closed while it waited would still run)."""

    def __init__(self, job: Job):
        self._job = job
        self._events = _read(job)

    def __aiter__(self) -> _Stream:
        return self

    async def __anext__(self) -> Event:
        return await anext(self._events)

    async def aclose(self) -> None:
        self._job.cancel.set()
        await self._events.aclose()


async def _read(job: Job) -> AsyncIterator[Event]:
    try:
        while (item := await job.out.get()) is not END:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        job.cancel.set()  # the reader is gone: the worker drops the job at its next step
