"""The OpenAI-compatible endpoints: models, chat completions, completions, embeddings, and feedback."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from fmstack.app.review.queue import queue_thumbs_down
from fmstack.core.errors import FmstackError
from fmstack.core.store.traces import add_feedback
from fmstack.engines.base import Delta
from fmstack.gateway import Call
from fmstack.server import review_api
from fmstack.server.deps import context_of, gateway_of
from fmstack.server.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    FeedbackRequest,
)
from fmstack.server.shapes import ChatShape, CompletionShape

router = APIRouter(prefix="/v1", tags=["OpenAI-compatible"])


@router.get("/models")
async def list_models(request: Request) -> dict:
    gateway = gateway_of(request)
    return {"object": "list", "data": [_model(spec, gateway) for spec in gateway.registry]}


@router.get("/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> dict:
    """One model, as in the list (404 with the known names when there is none)."""
    gateway = gateway_of(request)
    return _model(gateway.registry.get(model_id), gateway)


def _model(spec, gateway) -> dict:
    return {
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
    events = await call.gateway.stream(call, body.model, request_, body.n)
    return await respond(call, body, chat, request, events, extra)


async def respond(
    call: Call,
    body: ChatCompletionRequest | CompletionRequest,
    chat: bool,
    request: Request,
    events: AsyncIterator[Delta],
    extra: dict | None = None,
):
    """Send a call's events as an OpenAI response: one JSON object, or SSE chunks when `body.stream`. The answer of
    an app under human review goes out as its policy says (`review_api.review`): held for a person in crawl."""
    send = functools.partial(_send, call, body, chat, request, extra=extra)
    return await review_api.review(request, call, body, events, send)


async def _send(
    call: Call,
    body: ChatCompletionRequest | CompletionRequest,
    chat: bool,
    request: Request,
    events: AsyncIterator[Delta],
    extra: dict | None = None,
    headers: dict | None = None,
):
    shape = ChatShape(call, body) if chat else CompletionShape(call, body)
    headers = {"X-Fmstack-Trace-Id": call.id} | (headers or {})
    if body.stream:
        return StreamingResponse(
            _sse(shape, events, extra),
            media_type="text/event-stream",
            headers=headers | {"Cache-Control": "no-cache"},
        )
    deltas = await _collect(events, request)
    if deltas is None:
        return Response(status_code=499)  # nobody is listening any more
    await call.committed()  # a client that saw the whole answer will find its trace
    return JSONResponse(shape.whole(deltas) | (extra or {}), headers=headers)


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
        for first in shape.first_chunks():
            yield data(first)
        async for delta in events:
            if (chunk := shape.chunk(delta)) is not None:
                yield data(chunk)
        await shape.call.committed()  # a client that saw the whole answer will find its trace
        for last in shape.last_chunks():
            yield data(last)
        if shape.body.include_usage:
            yield data(shape.usage_chunk())
        if extra:
            yield data(shape.extra_chunk(extra))
    except FmstackError as exc:  # headers are sent: report in the stream, as OpenAI does
        yield data(exc.to_body())
    yield "data: [DONE]\n\n"


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
            if row.rating == -1:
                queue_thumbs_down(session, row.trace_id)  # an app under review: a person sees every thumbs-down
            return {"object": "feedback", "id": row.id, "trace_id": row.trace_id, "rating": row.rating}

    return await asyncio.to_thread(store)
