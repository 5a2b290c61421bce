"""The hand-over between callers and a local model's worker thread (`JobQueue` in, `Outbox` out) with a stand-in
worker: streaming order, the queue bound, cancellation, an error reaching the caller."""

import asyncio
import threading

import pytest

from fmstack.core.errors import QueueFull
from fmstack.engines.base import Delta, Finish, GenerationRequest, Prepared
from fmstack.engines.jobs import END, JobQueue, Outbox


def prepared(n: int) -> Prepared:
    return Prepared(GenerationRequest(prompt="x"), "x", 1, n)


class Worker:
    """What the batch runners do, one job at a time: a token per step until `max_tokens` or a cancelled stream.
    Each step waits for `steps` to release it, so a test decides when tokens are made; `fail` raises mid-job."""

    def __init__(self, max_queue: int, fail: bool = False):
        self.jobs = JobQueue("m", max_queue)
        self.steps = threading.Semaphore(10_000)
        self.fail = fail
        self.produced: list[int] = []
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (job := self.jobs.get(block=True)) is not None:
            out, made = Outbox(), 0
            self.started.set()
            try:
                while made < job.prepared.max_tokens and not job.cancel.is_set():
                    self.steps.acquire()
                    if self.fail and made:
                        raise RuntimeError("boom")
                    out.put(job, Delta(f"t{made} "))
                    out.flush()
                    made += 1
                out.put(job, Finish("length", 1, made))
            except RuntimeError as exc:
                out.put(job, exc)
            self.produced.append(made)
            out.put(job, END)
            out.flush()

    def close(self) -> None:
        self.jobs.close()
        self.thread.join(timeout=10)


def test_stream_yields_tokens_in_order_then_finish():
    async def run():
        w = Worker(max_queue=2)
        events = [e async for e in w.jobs.submit(prepared(3))]
        w.close()
        return events

    events = asyncio.run(run())
    assert [e.text for e in events[:-1]] == ["t0 ", "t1 ", "t2 "]
    assert events[-1] == Finish("length", 1, 3)


def test_queue_full_raises_at_submit_not_mid_stream():
    async def run():
        w = Worker(max_queue=1)
        w.steps = threading.Semaphore(1)  # one token, then the worker holds request 1 until released
        running = w.jobs.submit(prepared(20))
        await anext(running)
        waiting = w.jobs.submit(prepared(1))  # request 2 waits in the queue: full now
        with pytest.raises(QueueFull):
            w.jobs.submit(prepared(1))
        assert w.jobs.waiting == 1
        await running.aclose()
        await waiting.aclose()
        w.steps.release(100)
        w.close()

    asyncio.run(run())


def test_closing_the_stream_stops_generation():
    async def run():
        w = Worker(max_queue=2)
        w.steps = threading.Semaphore(1)
        stream = w.jobs.submit(prepared(500))
        await anext(stream)
        await stream.aclose()  # sets the job's cancel flag
        w.steps.release(500)  # however fast it could go now, the worker stops at its next step
        w.close()
        return w.produced

    produced = asyncio.run(run())
    assert produced and produced[0] <= 2


def test_a_job_cancelled_while_it_waits_is_never_started():
    async def run():
        w = Worker(max_queue=2)
        w.steps = threading.Semaphore(1)
        first = w.jobs.submit(prepared(5))
        await anext(first)
        second = w.jobs.submit(prepared(5))
        await second.aclose()
        w.steps.release(100)
        rest = [e async for e in first]
        w.close()
        return rest, w.produced

    rest, produced = asyncio.run(run())
    assert rest[-1] == Finish("length", 1, 5) and produced == [5]


def test_engine_exception_reaches_the_caller():
    async def run():
        w = Worker(max_queue=2, fail=True)
        seen = []
        with pytest.raises(RuntimeError, match="boom"):
            async for e in w.jobs.submit(prepared(3)):
                seen.append(e.text)
        w.close()
        return seen

    assert asyncio.run(run()) == ["t0 "]
