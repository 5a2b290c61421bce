"""One call's life: what it asked, what came back, how long it took. It ends as a trace row and metrics.

Every call builds a `Call`; whatever happens (success, user error, engine error, client gone, timeout) it is
closed exactly once and handed to the trace writer, so the traces table matches the calls made.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from fmstack.core.errors import FmstackError, RequestTimeout
from fmstack.core.registry import ModelSpec
from fmstack.core.store.schema import utcnow
from fmstack.engines.base import Delta, Event, Finish, Prepared

if TYPE_CHECKING:
    from fmstack.gateway.service import Gateway


@dataclass(frozen=True)
class CallContext:
    """Who asked and through what, recorded on the trace: the fields every caller may know."""

    app: str | None = None
    user: str | None = None  # default: the request's `user` field
    prompt_name: str | None = None
    prompt_version: str | None = None
    route: str | None = None
    variant: str | None = None
    key_name: str | None = None
    eval_run_id: str | None = None

    def columns(self) -> dict:
        return {k: v[:200] for k, v in asdict(self).items() if v is not None}  # column widths: PostgreSQL enforces


class Call:
    def __init__(
        self, gateway: Gateway, endpoint: str, prefix: str, params: dict | None, context: CallContext | None = None
    ):
        self.gateway = gateway
        self.id = f"{prefix}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self._t0 = time.perf_counter()
        self._first: float | None = None
        self.spec: ModelSpec | None = None
        self.parts: dict[int, list[str]] = {}  # text by choice index (`n` > 1 requests have several)
        self.finishes: dict[int, Finish] = {}
        self.finish: Finish | None = None  # all choices together: the usage of the whole call
        self._closed = False
        self.saved: Future | None = None  # done once the trace row is committed
        self.row: dict = (
            dict(
                id=self.id,
                created_at=utcnow(),
                endpoint=endpoint[:64],
                model=_text_field(params, "model"),
                user=_text_field(params, "user"),
                request=params,
                prompt_tokens=0,
                completion_tokens=0,
                cost=0.0,
            )
            | (context or CallContext()).columns()
        )

    def use(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.row.update(model=spec.name, engine=spec.engine)
        self.gateway.metrics.in_flight.labels(spec.name).inc()

    @property
    def text(self) -> str:
        """The first choice's text: what the trace keeps as the response."""
        return self.text_of(0)

    def text_of(self, index: int) -> str:
        return "".join(self.parts.get(index, ()))

    def reason(self, index: int = 0) -> str | None:
        finish = self.finishes.get(index)
        return finish.reason if finish else None

    def prepared(self, prepared: Prepared) -> None:
        """The prompt is counted: a request cut short later is still charged for it."""
        self.row["prompt_tokens"] = prepared.prompt_tokens

    def ok(self, prompt_tokens: int, completion_tokens: int, finish_reason: str | None = None) -> None:
        self.row.update(
            status="ok",
            status_code=200,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            finish_reason=finish_reason,
        )
        self.close()

    def finished(self, finish: Finish) -> None:
        """The engine's own count of the tokens, and what its optimisations saved (prefix cache, speculation)."""
        self.row.update(
            cached_tokens=finish.cached_tokens, draft_tokens=finish.draft_tokens, accepted_tokens=finish.accepted_tokens
        )
        self.ok(finish.prompt_tokens, finish.completion_tokens, finish.reason)

    def fail(self, exc: BaseException) -> None:
        if isinstance(exc, FmstackError):
            self.row.update(status="error", status_code=exc.status, error=exc.message)
        else:
            self.row.update(status="error", status_code=500, error=f"{type(exc).__name__}: {exc}")
        self.close()

    def cancel(self) -> None:
        self.row.update(status="cancelled", status_code=499, error="client disconnected")
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        now = time.perf_counter()
        row = self.row
        row.setdefault("status", "error")
        row.setdefault("status_code", 500)
        row["latency_ms"] = (now - self._t0) * 1000
        row["response_text"] = self.text if 0 in self.parts else None
        if self.spec is not None:
            row["cost"] = self.spec.cost(row["prompt_tokens"], row["completion_tokens"])
        if self._first is not None:
            row["ttft_ms"] = (self._first - self._t0) * 1000
            decode_s = now - self._first
            if row["completion_tokens"] > 1 and decode_s > 0:
                row["tokens_per_s"] = (row["completion_tokens"] - 1) / decode_s
        self.saved = self.gateway.writer.write(row)
        self.gateway.metrics.observe(row)
        if self.spec is not None:
            self.gateway.metrics.in_flight.labels(self.spec.name).dec()

    async def committed(self) -> None:
        """Wait until the closed call's trace is in the store (see `TraceWriter.write`)."""
        if self.saved is not None:
            await asyncio.wrap_future(self.saved)

    async def run(self, events: AsyncIterator[Event], timeout: float) -> AsyncIterator[Delta]:
        """Relay an engine's stream, timing it; closing this generator stops the engine's generation."""
        deadline = time.perf_counter() + timeout
        async with contextlib.aclosing(events):
            try:
                while True:
                    try:
                        event = await asyncio.wait_for(anext(events), deadline - time.perf_counter())
                    except StopAsyncIteration:
                        break
                    except TimeoutError:
                        raise RequestTimeout(f"The request took longer than the {timeout:.0f} s timeout.") from None
                    if isinstance(event, Finish):
                        self.finishes[event.index] = event
                        continue
                    if self._first is None:
                        self._first = time.perf_counter()
                    self.parts.setdefault(event.index, []).append(event.text)
                    self.row["completion_tokens"] += event.tokens
                    yield event
            except (asyncio.CancelledError, GeneratorExit):
                self.cancel()
                raise
            except BaseException as exc:
                self.fail(exc)
                raise
        if not self.finishes:
            self.cancel()
        else:
            self.finish = _total(self.finishes)
            self.finished(self.finish)


def _total(finishes: dict[int, Finish]) -> Finish:
    """One usage for the call: the prompt once (every choice shares it), the generated tokens of all choices."""
    first = finishes[min(finishes)]
    total = Finish(first.reason, first.prompt_tokens, 0)
    for f in finishes.values():
        total.completion_tokens += f.completion_tokens
        total.cached_tokens += f.cached_tokens
        total.draft_tokens += f.draft_tokens
        total.accepted_tokens += f.accepted_tokens
    return total


def _text_field(params: dict | None, key: str) -> str | None:
    """A string field of a request body that may be malformed (then the field is simply unknown)."""
    value = (params or {}).get(key)
    return value[:200] if isinstance(value, str) else None  # the column's width: PostgreSQL enforces it
