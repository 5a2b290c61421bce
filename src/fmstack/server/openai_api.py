"""The OpenAI-compatible endpoints: models, chat completions, completions, embeddings, and feedback."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from fmstack.core.errors import FmstackError
from fmstack.core.store.traces import add_feedback
from fmstack.engines.base import Delta
from fmstack.gateway import Call
from fmstack.server.deps import context_of, gateway_of
from fmstack.server.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    FeedbackRequest,
)

router = APIRouter(prefix="/v1", tags=["OpenAI-compatible"])


@router.get("/models")
async def list_models(request: Request) -> dict:
    gateway = gateway_of(request)
    return {
        "object": "list",
        "data": [
            {
                "id": spec.name,
                "object": "model",
                "created": 0,
                "owned_by": "fmstack",
                "engine": spec.engine,
                "kind": spec.kind,
                "context_length": spec.context_length,
                "available": spec.available(),
                "loaded": spec.name in gateway.pool.loaded,
            }
            for spec in gateway.registry
        ],
    }


@router.post("/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest, request: Request):
    call = gateway_of(request).call(
        "chat.completions", "chatcmpl", body.model_dump(exclude_none=True), context_of(request)
    )
    return await _generate(call, body, chat=True, request=request)


@router.post("/completions", response_model=None)
async def completions(body: CompletionRequest, request: Request):
    call = gateway_of(request).call("completions", "cmpl", body.model_dump(exclude_none=True), context_of(request))
    return await _generate(call, body, chat=False, request=request)


async def chat_response(call: Call, body: ChatCompletionRequest, request: Request, extra: dict | None = None):
    """Answer a chat request exactly as /v1/chat/completions does (JSON or SSE), traced by `call`: for routes that
    build the messages themselves (a stored prompt rendered with variables, RAG's grounded messages). `extra` is
    added to the response (RAG's `sources`)."""
    return await _generate(call, body, chat=True, request=request, extra=extra)


async def _generate(
    call: Call,
    body: ChatCompletionRequest | CompletionRequest,
    chat: bool,
    request: Request,
    extra: dict | None = None,
):
    """`extra`: fields added to the response object and, when streaming, sent as a last chunk before [DONE]
    (RAG's `sources`)."""
    try:
        request_ = body.to_generation()
    except Exception as exc:
        call.fail(exc)
        raise
    # errors before the first token raise here and get their own HTTP status
    events = await call.gateway.stream(call, body.model, request_)
    return await respond(call, body, chat, request, events, extra)


async def respond(
    call: Call,
    body: ChatCompletionRequest | CompletionRequest,
    chat: bool,
    request: Request,
    events: AsyncIterator[Delta],
    extra: dict | None = None,
):
    """Send a call's events as an OpenAI response: one JSON object, or SSE chunks when `body.stream`."""
    shape = _ChatShape(call, body) if chat else _CompletionShape(call, body)
    if body.stream:
        return StreamingResponse(
            _sse(shape, events, extra),
            media_type="text/event-stream",
            headers={"X-Fmstack-Trace-Id": call.id, "Cache-Control": "no-cache"},
        )
    deltas = await _collect(events, request)
    if deltas is None:
        return Response(status_code=499)  # nobody is listening any more
    return JSONResponse(shape.whole(deltas) | (extra or {}), headers={"X-Fmstack-Trace-Id": call.id})


async def _collect(events: AsyncIterator[Delta], request: Request, poll: float = 0.25) -> list[Delta] | None:
    """The whole answer, or None if the client left first: then generation stops (a client that timed out and
    retries would otherwise fill the queue with work nobody reads)."""

    async def gather() -> list[Delta]:
        return [delta async for delta in events]

    task = asyncio.ensure_future(gather())
    while not (await asyncio.wait({task}, timeout=poll))[0]:
        if await request.is_disconnected():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return None
    return task.result()


async def _sse(shape, events: AsyncIterator[Delta], extra: dict | None = None) -> AsyncIterator[str]:
    def data(obj: dict) -> str:
        return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

    try:
        if first := shape.first_chunk():
            yield data(first)
        async for delta in events:
            yield data(shape.chunk(delta))
        yield data(shape.last_chunk())
        if shape.body.include_usage:
            yield data(shape.usage_chunk())
        if extra:
            yield data(shape._base(shape.chunk_name) | {"choices": []} | extra)
    except FmstackError as exc:  # headers are sent: report in the stream, as OpenAI does
        yield data(exc.to_body())
    yield "data: [DONE]\n\n"


class _Shape:
    """Builds OpenAI response objects for one call."""

    object_name = ""
    chunk_name = ""

    def __init__(self, call: Call, body):
        self.call, self.body = call, body

    def _base(self, name: str) -> dict:
        return {
            "id": self.call.id,
            "object": name,
            "created": self.call.created,
            "model": self.call.spec.name,
            "system_fingerprint": f"fmstack-{self.call.spec.engine}",
        }

    def usage(self) -> dict:
        f = self.call.finish
        p, c = (f.prompt_tokens, f.completion_tokens) if f else (0, 0)
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

    def usage_chunk(self) -> dict:
        return self._base(self.chunk_name) | {"choices": [], "usage": self.usage()}

    def reason(self) -> str | None:
        return self.call.finish.reason if self.call.finish else None

    def first_chunk(self) -> dict | None:
        return None


class _ChatShape(_Shape):
    object_name = "chat.completion"
    chunk_name = "chat.completion.chunk"

    def _logprobs(self, deltas: list[Delta]) -> dict | None:
        if not self.body.logprobs:
            return None
        return {
            "content": [
                {
                    "token": tok.token,
                    "logprob": tok.logprob,
                    "bytes": tok.bytes,
                    "top_logprobs": [{"token": t.token, "logprob": t.logprob, "bytes": t.bytes} for t in top],
                }
                for d in deltas
                for tok, top in d.logprobs
            ]
        }

    def whole(self, deltas: list[Delta]) -> dict:
        message = {"role": "assistant", "content": "".join(d.text for d in deltas)}
        choice = {"index": 0, "message": message, "logprobs": self._logprobs(deltas), "finish_reason": self.reason()}
        return self._base(self.object_name) | {"choices": [choice], "usage": self.usage()}

    def _chunk(self, delta: dict, logprobs: dict | None = None, reason: str | None = None) -> dict:
        choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": reason}
        return self._base(self.chunk_name) | {"choices": [choice]}

    def first_chunk(self) -> dict:
        return self._chunk({"role": "assistant", "content": ""})

    def chunk(self, delta: Delta) -> dict:
        return self._chunk({"content": delta.text}, self._logprobs([delta]))

    def last_chunk(self) -> dict:
        return self._chunk({}, reason=self.reason())


class _CompletionShape(_Shape):
    object_name = "text_completion"
    chunk_name = "text_completion"

    def _logprobs(self, deltas: list[Delta], offset: int = 0) -> dict | None:
        if self.body.logprobs is None:
            return None
        tokens, logprobs, tops, offsets = [], [], [], []
        for d in deltas:
            for tok, top in d.logprobs:
                tokens.append(tok.token)
                logprobs.append(tok.logprob)
                tops.append({t.token: t.logprob for t in top})
                offsets.append(offset)
                offset += len(tok.token)
        return {"tokens": tokens, "token_logprobs": logprobs, "top_logprobs": tops, "text_offset": offsets}

    def _choice(self, text: str, logprobs: dict | None, reason: str | None) -> dict:
        return {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": reason}

    def whole(self, deltas: list[Delta]) -> dict:
        choice = self._choice("".join(d.text for d in deltas), self._logprobs(deltas), self.reason())
        return self._base(self.object_name) | {"choices": [choice], "usage": self.usage()}

    def chunk(self, delta: Delta) -> dict:
        offset = len(self.call.text) - len(delta.text)
        return self._base(self.chunk_name) | {
            "choices": [self._choice(delta.text, self._logprobs([delta], offset), None)]
        }

    def last_chunk(self) -> dict:
        return self._base(self.chunk_name) | {"choices": [self._choice("", None, self.reason())]}


@router.post("/embeddings")
async def embeddings(body: EmbeddingRequest, request: Request) -> dict:
    params = body.model_dump(exclude_none=True)
    try:
        texts = body.texts()
    except Exception as exc:
        gateway_of(request).call("embeddings", "embd", params, context_of(request)).fail(exc)
        raise
    vectors, tokens = await gateway_of(request).embed(body.model, texts, params, context_of(request))
    encode = (
        (lambda v: base64.b64encode(v.astype("<f4").tobytes()).decode())
        if body.encoding_format == "base64"
        else (lambda v: v.tolist())
    )
    return {
        "object": "list",
        "model": body.model,
        "data": [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(vectors)],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


@router.post("/feedback", tags=["fmstack"])
async def feedback(body: FeedbackRequest, request: Request) -> dict:
    """Thumbs up/down, a corrected answer or a comment on a completion (by its `id`)."""
    gateway = gateway_of(request)

    def store() -> dict:
        gateway.writer.flush()  # the trace may still be on its way to the store
        with gateway.sessions.begin() as session:
            row = add_feedback(session, body.trace_id, body.rating, body.correction, body.comment)
            return {"object": "feedback", "id": row.id, "trace_id": row.trace_id, "rating": row.rating}

    return await asyncio.to_thread(store)
