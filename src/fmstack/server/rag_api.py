"""RAG over HTTP: list collections, search one, and chat completions grounded in it.

`POST /v1/rag/{collection}/chat/completions` takes a normal chat-completions body (plus `top_k`, `filters`,
`rerank`, `min_similarity`) and answers like /v1/chat/completions — the same engine path, streaming, errors and
trace — with a `sources` array: in the JSON response, and as the last SSE chunk before `data: [DONE]`. The trace
records the retrieved chunks in `retrieval`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from fmstack.app.rag import Filters, Rag
from fmstack.app.rag.answer import MIN_SIMILARITY, ground, i_dont_know, question_of
from fmstack.engines.base import Delta, Event, Finish
from fmstack.core.errors import InvalidRequest
from fmstack.server import openai_api
from fmstack.server.calls import Call
from fmstack.engines.messages import Message
from fmstack.server.schemas import ChatCompletionRequest

router = APIRouter(prefix="/v1/rag", tags=["RAG"])
_LOCK = threading.Lock()


class FilterSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str | None = Field(None, description='glob over the cited source path, e.g. "docs/*.md"')
    metadata: dict[str, Any] = Field(default_factory=dict, description="equality on document or record fields")

    def to_filters(self) -> Filters:
        return Filters(self.source, dict(self.metadata))


class RetrievalOptions(BaseModel):
    top_k: int = Field(5, ge=1, le=20, description="chunks given to the model")
    filters: FilterSpec | None = None
    rerank: str = Field("none", description="none | similarity | mmr")
    min_similarity: float = Field(MIN_SIMILARITY, ge=-1, le=1, description="below it a chunk is not relevant")


class RagChatRequest(ChatCompletionRequest, RetrievalOptions):
    model: str | None = Field(None, description="chat model (default: the server's FMSTACK_DEFAULT_MODEL)")


class SearchRequest(RetrievalOptions):
    model_config = ConfigDict(extra="forbid")
    query: str


def get_rag(request: Request) -> Rag:
    """The server's one `Rag`, made on first use (its vector indexes stay loaded)."""
    state = request.app.state
    if getattr(state, "rag", None) is None:
        with _LOCK:
            if getattr(state, "rag", None) is None:
                services = state.services
                state.rag = Rag(services.sessions, services.settings, services.pool)
    return state.rag


@router.get("/collections")
async def collections(request: Request) -> dict:
    rag = get_rag(request)
    return {"object": "list", "data": await asyncio.to_thread(rag.collections)}


@router.post("/{collection}/search")
async def search(collection: str, body: SearchRequest, request: Request) -> dict:
    """The chunks retrieval finds for `query`, best first, with their scores and positions."""
    rag = get_rag(request)
    filters = body.filters.to_filters() if body.filters else None
    hits = await asyncio.to_thread(rag.search, collection, body.query, body.top_k, filters, body.rerank)
    return {"object": "list", "collection": collection, "data": [h.as_dict() for h in hits]}


@router.post("/{collection}/chat/completions", response_model=None)
async def chat_completions(collection: str, body: RagChatRequest, request: Request):
    services = request.app.state.services
    body.model = body.model or services.settings.default_model
    params = body.model_dump(exclude_none=True) | {"collection": collection}
    call = Call(services, "rag.chat.completions", "chatcmpl", params, request.headers.get("x-fmstack-app"))
    try:
        messages = [m.as_template_input() for m in body.messages]
        question = question_of(messages)
        if not question.strip():
            raise InvalidRequest("The last user message is empty: there is nothing to retrieve for.", param="messages")
        rag = get_rag(request)
        filters = body.filters.to_filters() if body.filters else None
        hits = await asyncio.to_thread(rag.search, collection, question, body.top_k, filters, body.rerank)
        grounding = ground(messages, hits, body.min_similarity)
    except Exception as exc:
        call.fail(exc)
        raise
    call.row["retrieval"] = {
        "collection": collection,
        "query": question,
        "top_k": body.top_k,
        "rerank": body.rerank,
        "filters": body.filters.model_dump() if body.filters else None,
        "min_similarity": body.min_similarity,
        "answered": grounding.answerable,
        "chunks": grounding.sources,
        "retrieved": [{"chunk_id": h.chunk_id, "source": h.source, "similarity": h.similarity} for h in hits],
    }
    extra = {"sources": grounding.sources}
    if grounding.answerable:
        grounded = body.model_copy(update={"messages": [Message(**m) for m in grounding.messages]})
        return await openai_api.chat_response(call, grounded, request, extra)
    try:  # nothing relevant: an honest "I don't know", without asking the model to make something up
        call.use(services.registry.get(body.model))
    except Exception as exc:
        call.fail(exc)
        raise
    events = call.run(_said(i_dont_know(collection)), services.settings.request_timeout)
    return await openai_api.respond(call, body, True, request, events, extra)


async def _said(text: str) -> AsyncIterator[Event]:
    yield Delta(text, tokens=0)
    yield Finish("stop", 0, 0)
