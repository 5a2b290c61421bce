"""The scheduler in front of a local model: callers submit requests and read tokens from an async stream.

One worker thread owns the model and decodes one sequence at a time. Callers never touch the model, so a later
scheduler can decode several sequences per step (continuous batching) or speculate, without changing them.
A bounded queue turns overload into an immediate `QueueFull` (HTTP 429) instead of unbounded waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

from fmstack.engines.base import Event, Prepared
from fmstack.core.errors import QueueFull

Generate = Callable[[Prepared, threading.Event], Iterator[Event]]
_END = object()


@dataclass
class _Job:
    prepared: Prepared
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancel: threading.Event = field(default_factory=threading.Event)

    def emit(self, item: object) -> None:
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.out.put_nowait, item)


class Scheduler:
    """Runs `generate` for one request at a time on a worker thread; at most `max_queue` wait behind it."""

    def __init__(self, name: str, generate: Generate, max_queue: int):
        self.name = name
        self._generate = generate
        self.max_queue = max_queue
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._waiting = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"fmstack-{name}", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        return self._waiting

    def submit(self, prepared: Prepared) -> AsyncIterator[Event]:
        """Queue a request now (or raise `QueueFull`); the returned stream yields its events."""
        with self._lock:
            if self._waiting >= self.max_queue:
                raise QueueFull(self.name)
            self._waiting += 1
        job = _Job(prepared, asyncio.get_running_loop())
        self._jobs.put(job)
        return self._read(job)

    async def _read(self, job: _Job) -> AsyncIterator[Event]:
        try:
            while (item := await job.out.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            job.cancel.set()  # the reader is gone: stop decoding at the next token

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            with self._lock:
                self._waiting -= 1
            if job.cancel.is_set():
                continue
            try:
                with contextlib.closing(self._generate(job.prepared, job.cancel)) as events:
                    for event in events:
                        job.emit(event)
                        if job.cancel.is_set():
                            break
            except Exception as exc:  # handed to the caller, who records it on the trace
                job.emit(exc)
            job.emit(_END)

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=30)
