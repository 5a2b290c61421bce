"""RAG over HTTP: list collections, search one, and chat completions grounded in it.

`POST /v1/rag/{collection}/chat/completions` takes a normal chat-completions body (plus `top_k`, `filters`,
`rerank`, `rerank_model`, `expand`, `expand_model` and `min_similarity`, the collection's calibrated threshold when
not given) and answers like /v1/chat/completions — the same engine path, streaming, errors and trace — with a
`sources` array: in the JSON response, and as the last SSE chunk before `data: [DONE]`. The trace records the
retrieved chunks in `retrieval`.
"""

from __future__ import annotations

import asyncio
import threading
from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from fmstack.app.rag import Filters, Rag
from fmstack.app.rag.chat import Retrieval, rag_chat
from fmstack.core.errors import InvalidRequest
from fmstack.server import openai_api
from fmstack.server.deps import context_of, gateway_of
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
    rerank: str = Field("none", description="none | similarity | mmr | llm | cross-encoder")
    rerank_model: str | None = Field(None, description="chat model of rerank=llm (default: FMSTACK_DEFAULT_MODEL)")
    expand: str = Field("none", description="none | hyde: search with a hypothetical answer the chat model writes")
    expand_model: str | None = Field(None, description="chat model of expand=hyde (default: FMSTACK_DEFAULT_MODEL)")
    min_similarity: float | None = Field(
        None, ge=-1, le=1, description="below it a chunk is not relevant (default: the collection's calibrated one)"
    )


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
                gateway = state.gateway
                state.rag = Rag(gateway.sessions, gateway.settings, gateway.pool, gateway)
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
    options = {"rerank_model": body.rerank_model, "expand": body.expand, "expand_model": body.expand_model}
    hits = await asyncio.to_thread(
        partial(rag.search, **options), collection, body.query, body.top_k, filters, body.rerank
    )
    return {"object": "list", "collection": collection, "data": [h.as_dict() for h in hits]}


@router.post("/{collection}/chat/completions", response_model=None)
async def chat_completions(collection: str, body: RagChatRequest, request: Request):
    gateway = gateway_of(request)
    body.model = body.model or gateway.settings.default_model
    params = body.model_dump(exclude_none=True) | {"collection": collection}
    call = gateway.call("rag.chat.completions", "chatcmpl", params, context_of(request))
    try:
        if body.n != 1:
            raise InvalidRequest("A RAG answer has one choice: send n = 1.", param="n")
        generation = body.to_generation()
        filters = body.filters.to_filters() if body.filters else None
        how = Retrieval(
            body.top_k, filters, body.rerank, body.min_similarity, body.rerank_model, body.expand, body.expand_model
        )
    except Exception as exc:
        call.fail(exc)
        raise
    reply = await rag_chat(gateway, get_rag(request), call, collection, body.model, generation, how)
    return await openai_api.respond(call, body, True, request, reply.deltas, {"sources": reply.sources})
