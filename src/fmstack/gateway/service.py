"""`Gateway`: models, the store's trace writer and the metrics, behind one call that every caller makes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy.orm import sessionmaker

from fmstack.core.config import Settings, get_settings
from fmstack.core.metrics import Metrics
from fmstack.core.registry import Registry
from fmstack.core.store import open_store
from fmstack.core.store.review_counts import ReviewCounts, review_counts
from fmstack.core.store.traces import TraceWriter, score_summary
from fmstack.engines.base import Delta, Event, GenerationRequest, check_supported
from fmstack.engines.embeddings import EmbeddingEngine
from fmstack.engines.pool import EnginePool
from fmstack.gateway.call import Call, CallContext
from fmstack.gateway.choices import choices
from fmstack.gateway.routes import Router


@dataclass
class Answer:
    """A whole generation, as callers that do not stream want it."""

    text: str
    trace_id: str
    model: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    cost: float


class Gateway:
    """One per process: the models (loaded once, on first use), the trace writer and the metrics they feed."""

    def __init__(self, settings: Settings, sessions: sessionmaker, pool: EnginePool | None = None):
        self.settings = settings
        self.sessions = sessions
        self.pool = pool or EnginePool(Registry(settings), settings)
        self.registry = self.pool.registry
        self.writer = TraceWriter(sessions)
        self.metrics = Metrics(self.queue_depths, self.trace_scores, self.review_counts)
        self.router = Router(sessions)

    @classmethod
    def open(cls, settings: Settings | None = None) -> Gateway:
        """A gateway on the configured store (FMSTACK_HOME / FMSTACK_DATABASE_URL), migrated."""
        settings = settings or get_settings()
        return cls(settings, open_store(settings))

    def call(self, endpoint: str, prefix: str, params: dict | None, context: CallContext | None = None) -> Call:
        """Start tracing a call; the caller closes it (or `stream` does)."""
        return Call(self, endpoint, prefix, params, context)

    async def stream(self, call: Call, model: str, request: GenerationRequest, n: int = 1) -> AsyncIterator[Delta]:
        """Start `request` on `model`, traced by `call`, and return its deltas (`n` choices: each its own sequence,
        its deltas marked with their `index`).

        Everything that can fail before the first token (unknown model, bad input, a full queue, an engine that
        fails at once) raises here, with the call already closed, so a server can still answer with a status code.
        """
        try:
            model = await asyncio.to_thread(self.router.route, call, model)  # an A/B route's name: its variant
            call.use(self.registry.get(model))
            engine = await asyncio.to_thread(self.pool.chat, model)
            check_supported(engine, request)
            prepared = await asyncio.to_thread(engine.prepare, request)  # templates, tokens, grammars: off the loop
            call.prepared(prepared)
            source = engine.stream(prepared) if n == 1 else choices(engine, prepared, n, self.settings.queue_size)
            events = call.run(source, self.settings.request_timeout)
            first = await anext(events, None)
        except Exception as exc:
            call.fail(exc)
            raise
        return _prepend(first, events)

    async def relay(self, call: Call, model: str, events: AsyncIterator[Event]) -> AsyncIterator[Delta]:
        """Trace events that did not come from an engine (RAG's "I don't know"), as if `model` had said them."""
        try:
            call.use(self.registry.get(await asyncio.to_thread(self.router.route, call, model)))
        except Exception as exc:
            call.fail(exc)
            raise
        return call.run(events, self.settings.request_timeout)

    async def complete(
        self,
        model: str,
        request: GenerationRequest,
        context: CallContext | None = None,
        endpoint: str = "chat.completions",
        params: dict | None = None,
    ) -> Answer:
        """The whole answer; `params` is what the trace records as the request (default: the request's fields)."""
        start = time.perf_counter()
        recorded = {"model": model} | (params if params is not None else _recorded(request))
        call = self.call(endpoint, "chatcmpl", recorded, context)
        text = "".join([delta.text async for delta in await self.stream(call, model, request)])
        f = call.finish
        p, c = (f.prompt_tokens, f.completion_tokens) if f else (call.row["prompt_tokens"], 0)
        return Answer(
            text,
            call.id,
            model,
            f.reason if f else None,
            p,
            c,
            (time.perf_counter() - start) * 1000,
            call.row["cost"],
        )

    def complete_sync(self, model: str, request: GenerationRequest, context: CallContext | None = None) -> Answer:
        """`complete` for code without an event loop; the trace is committed before it returns."""
        answer = asyncio.run(self.complete(model, request, context))
        self.writer.flush()
        return answer

    async def embed(
        self, model: str, texts: list[str], params: dict | None = None, context: CallContext | None = None
    ) -> tuple[list, int]:
        """Vectors and the tokens they cost, traced as one embeddings call."""
        call = self.call("embeddings", "embd", {"model": model} | (params or {}), context)
        try:
            call.use(self.registry.get(model))
            engine: EmbeddingEngine = await asyncio.to_thread(self.pool.embedding, model)
            vectors, tokens = await asyncio.to_thread(engine.embed, texts)
        except Exception as exc:
            call.fail(exc)
            raise
        call.ok(tokens, 0)
        await call.committed()
        return vectors, tokens

    def trace_scores(self) -> list[tuple[str, str, float | None, int]]:
        with self.sessions() as session:
            return score_summary(session)

    def review_counts(self) -> ReviewCounts:
        self.writer.flush()  # the answers this process finished count at once
        with self.sessions() as session:
            return review_counts(session)

    def queue_depths(self) -> dict[str, int]:
        return {name: e.queue_depth() for name, e in self.pool.loaded.items() if hasattr(e, "queue_depth")}

    def close(self) -> None:
        """Commit every trace handed in, then free the models."""
        self.writer.close()
        self.pool.close()


async def _prepend(first: Delta | None, rest: AsyncIterator[Delta]) -> AsyncIterator[Delta]:
    async with contextlib.aclosing(rest):  # whoever stops reading this stops the generation at once
        if first is not None:
            yield first
        async for delta in rest:
            yield delta


def _recorded(request: GenerationRequest) -> dict:
    fields = {"messages": request.messages, "prompt": request.prompt, "max_tokens": request.max_tokens}
    fields |= {"temperature": request.temperature, "top_p": request.top_p, "seed": request.seed}
    fields |= {"stop": request.stop or None, "response_format": request.response_format}
    return {k: v for k, v in fields.items() if v is not None}
