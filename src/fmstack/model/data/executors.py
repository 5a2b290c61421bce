"""Where per-shard jobs run: in this process, in a pool using every core, or on Ray Data.

All three call the same function on the same JSON-able jobs and return its results; the outputs are the shard
files the function writes, so they are identical whichever engine ran them. Results arrive in completion order,
for the progress bar; callers sort them by shard.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from typing import Any

Job = dict[str, Any]
Fn = Callable[[Job], dict[str, Any]]


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_jobs(
    fn: Fn, jobs: list[Job], engine: str = "local", workers: int | None = None, ray_address: str | None = None
) -> Iterator[dict[str, Any]]:
    """`fn(job)` for every job, yielded as each finishes."""
    if not jobs:
        return iter(())
    if engine == "ray":
        return _ray(fn, jobs, workers, ray_address)
    workers = min(workers or default_workers(), len(jobs))
    return (fn(j) for j in jobs) if workers == 1 else _pool(fn, jobs, workers)


def _pool(fn: Fn, jobs: list[Job], workers: int) -> Iterator[dict[str, Any]]:
    """A process pool with at most `workers` jobs in flight: a generator closed early (strict mode, Ctrl-C)
    cancels what has not started. Spawned, not forked: the parent may hold threads (tokenizers, the store)."""
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        pending = iter(jobs)
        running = {pool.submit(fn, j) for j in _take(pending, workers * 2)}
        try:
            while running:
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield fut.result()
                running |= {pool.submit(fn, j) for j in _take(pending, len(done))}
        finally:
            for fut in running:
                fut.cancel()


def _take(it: Iterator[Job], n: int) -> list[Job]:
    out = []
    for _ in range(n):
        try:
            out.append(next(it))
        except StopIteration:
            break
    return out


def _ray(fn: Fn, jobs: list[Job], workers: int | None, address: str | None) -> Iterator[dict[str, Any]]:
    """Ray Data over the job list: a local Ray started here (with `workers` CPUs) or the cluster at `address`.
    Jobs and results cross as JSON strings, so Arrow never has to guess a schema for nested statistics."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address=address,
            num_cpus=None if address else (workers or default_workers()),
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    ds = ray.data.from_items([{"job": json.dumps(j)} for j in jobs], override_num_blocks=len(jobs))
    mapped = ds.map(_RayCall(fn), concurrency=workers or None)
    for row in mapped.iter_rows():
        yield json.loads(row["result"])


class _RayCall:
    """A picklable wrapper: Ray ships it to the workers, which import `fn` by name."""

    def __init__(self, fn: Fn) -> None:
        self.fn = fn

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        return {"result": json.dumps(self.fn(json.loads(row["job"])))}
