"""A grounded chat turn through the gateway: retrieve for the last question, ground the messages, answer (or say
"I don't know" without asking the model), and record the retrieval on the call's trace.

The server's `/v1/rag/{collection}/chat/completions` and `fmstack rag ask` both answer with `rag_chat`, so the
terminal and the API give the same answer with the same trace.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from functools import partial

from fmstack.app.rag.answer import ground, i_dont_know, question_of
from fmstack.app.rag.retrieve import Filters
from fmstack.app.rag.service import Rag
from fmstack.core.errors import InvalidRequest
from fmstack.engines.base import Delta, Event, Finish, GenerationRequest
from fmstack.gateway import Call, Gateway


@dataclass
class Retrieval:
    """How to retrieve for a question: the options `rag ask` and the RAG route share."""

    top_k: int = 5
    filters: Filters | None = None
    rerank: str = "none"
    min_similarity: float | None = None  # None: the collection's calibrated threshold, else MIN_SIMILARITY
    rerank_model: str | None = None  # the chat model of `rerank="llm"` (default: FMSTACK_DEFAULT_MODEL)
    expand: str = "none"  # "hyde": search with a hypothetical answer too (fmstack.app.rag.expand)
    expand_model: str | None = None  # the chat model that writes it (default: FMSTACK_DEFAULT_MODEL)


@dataclass
class RagReply:
    """The answer's deltas (still to be read) and the sources it may cite, numbered from 1."""

    deltas: AsyncIterator[Delta]
    sources: list[dict] = field(default_factory=list)


async def rag_chat(
    gateway: Gateway, rag: Rag, call: Call, collection: str, model: str, request: GenerationRequest, how: Retrieval
) -> RagReply:
    """Answer `request.messages` from `collection` with `model`, traced by `call` (closed on any failure)."""
    try:
        messages = request.messages or []
        question = question_of(messages)
        if not question.strip():
            raise InvalidRequest("The last user message is empty: there is nothing to retrieve for.", param="messages")
        threshold = how.min_similarity
        if threshold is None:
            threshold = await asyncio.to_thread(rag.threshold, collection, how.expand)
        search = partial(rag.search, rerank_model=how.rerank_model, expand=how.expand, expand_model=how.expand_model)
        hits = await asyncio.to_thread(search, collection, question, how.top_k, how.filters, how.rerank)
        grounding = ground(messages, hits, threshold)
    except Exception as exc:
        call.fail(exc)
        raise
    call.row["retrieval"] = {
        "collection": collection,
        "query": question,
        "top_k": how.top_k,
        "rerank": how.rerank,
        "expand": how.expand,
        "filters": {"source": how.filters.source, "metadata": how.filters.metadata} if how.filters else None,
        "min_similarity": threshold,
        "answered": grounding.answerable,
        "chunks": grounding.sources,
        "retrieved": [{"chunk_id": h.chunk_id, "source": h.source, "similarity": h.similarity} for h in hits],
    }
    if grounding.answerable:
        deltas = await gateway.stream(call, model, replace(request, messages=grounding.messages))
    else:  # nothing relevant: an honest "I don't know", without asking the model to make something up
        deltas = await gateway.relay(call, model, _said(i_dont_know(collection)))
    return RagReply(deltas, grounding.sources)


async def _said(text: str) -> AsyncIterator[Event]:
    yield Delta(text, tokens=0)
    yield Finish("stop", 0, 0)
