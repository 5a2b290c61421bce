"""Turns on the CPU for every local engine in the process.

Each llama.cpp context and the torch engines are built to use all cores. When two of them compute at once on a
small machine their threads oversubscribe the cores, and llama.cpp's workers wait for each other in spinning
barriers, so both run slower than if they took turns. Engines therefore take one process-wide turn per decode
step (a step is tens of milliseconds): a lone model keeps every core, two models busy at once alternate step by
step, and callers (the eval runner, say) no longer need a lock of their own to keep models apart.

llama.cpp computes on one thread besides (`call`): its OpenMP runtime gives every thread that calls into it a team
of worker threads of its own, and once a process holds more of them than there are cores (two models' teams of
two on two cores), libgomp stops spinning between steps and puts its threads to sleep after each one. Every model
then decodes about a quarter slower, also while the others sit idle (SmolLM2: 114 tok/s alone; 72-93 beside a
second, idle model; 118-129 with both computing on one thread). One calling thread keeps one team.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


class ComputeTurns:
    """A first-come, first-served lock: a thread that releases and asks again queues behind the waiters, so a
    busy model cannot starve another one (a plain `threading.Lock` gives no such promise)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._next_ticket = 0
        self._serving = 0
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fmstack-compute")

    def call(self, fn: Callable[..., T], *args) -> T:
        """`fn(*args)` in a turn, on the process's one llama.cpp compute thread (see the module docstring)."""
        with self.turn():
            return self._thread.submit(fn, *args).result()

    @contextmanager
    def turn(self) -> Iterator[None]:
        with self._cond:
            ticket = self._next_ticket
            self._next_ticket += 1
            while self._serving != ticket:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._serving += 1
                self._cond.notify_all()


COMPUTE = ComputeTurns()
