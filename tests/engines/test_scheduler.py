"""The scheduler with a stand-in decode function: queue bound, streaming order, cancellation."""

import asyncio
import threading
import time

import pytest

from fmstack.core.errors import QueueFull
from fmstack.engines.base import Delta, Finish, GenerationRequest, Prepared
from fmstack.engines.scheduler import Scheduler


def prepared(n: int) -> Prepared:
    return Prepared(GenerationRequest(prompt="x"), "x", 1, n)


class Decoder:
    """Emits one token every `delay` seconds and remembers how many it produced per request."""

    def __init__(self, delay: float = 0.01):
        self.delay = delay
        self.produced: list[int] = []
        self.started = threading.Event()

    def __call__(self, p: Prepared, cancel: threading.Event):
        self.started.set()
        self.produced.append(0)
        for i in range(p.max_tokens):
            if cancel.is_set():
                break
            time.sleep(self.delay)
            self.produced[-1] += 1
            yield Delta(f"t{i} ")
        yield Finish("length", 1, self.produced[-1])


def test_stream_yields_tokens_in_order_then_finish():
    async def run():
        s = Scheduler("m", Decoder(0), max_queue=2)
        events = [e async for e in s.submit(prepared(3))]
        s.close()
        return events

    events = asyncio.run(run())
    assert [e.text for e in events[:-1]] == ["t0 ", "t1 ", "t2 "]
    assert events[-1] == Finish("length", 1, 3)


def test_queue_full_raises_at_submit_not_mid_stream():
    async def run():
        decoder = Decoder(0.05)
        s = Scheduler("m", decoder, max_queue=1)
        running = s.submit(prepared(20))
        first = asyncio.ensure_future(anext(running))
        await asyncio.to_thread(decoder.started.wait, 5)  # the worker holds request 1
        waiting = s.submit(prepared(1))  # request 2 waits in the queue: full now
        with pytest.raises(QueueFull):
            s.submit(prepared(1))
        await first
        await running.aclose()
        await waiting.aclose()
        s.close()

    asyncio.run(run())


def test_closing_the_stream_stops_generation():
    async def run():
        decoder = Decoder(0.02)
        s = Scheduler("m", decoder, max_queue=2)
        stream = s.submit(prepared(500))
        await anext(stream)
        await stream.aclose()
        await asyncio.sleep(0.3)
        s.close()
        return decoder.produced

    produced = asyncio.run(run())
    assert produced and produced[0] < 50


def test_engine_exception_reaches_the_caller():
    def broken(p, cancel):
        yield Delta("a")
        raise RuntimeError("boom")

    async def run():
        s = Scheduler("m", broken, max_queue=2)
        seen = []
        with pytest.raises(RuntimeError, match="boom"):
            async for e in s.submit(prepared(1)):
                seen.append(e.text)
        s.close()
        return seen

    assert asyncio.run(run()) == ["a"]
