"""Synthetic questions about a collection, written by the local chat model from its own chunks, kept only when
retrieval can find them: what `calibrate` and `tune` learn from, so a collection needs no hand-written set.

A question is kept when it reads as a question about a subject (it ends with "?", names no "passage"/"text") and
its chunk's own document is among the top `RETRIEVABLE_K` hits (a question retrieval cannot tie to its document
is either too vague or about something the document shares with others: it would teach the wrong thing).
"""

from __future__ import annotations

import asyncio
import fnmatch
import glob
import random
import re
from dataclasses import dataclass

from sqlalchemy import func, select

from fmstack.app.rag.collections import get_collection
from fmstack.app.rag.evaluate import Question
from fmstack.core.errors import InvalidRequest
from fmstack.core.store.schema import RagChunk, RagDocument
from fmstack.gateway import CallContext, Gateway, generation_request

APP = "fmstack-rag"
RETRIEVABLE_K = 10
WRITER_SYSTEM = "You write one short search question about a passage. Reply with the question only."
WRITER_USER = (
    'Passage from "{title}":\n\n{text}\n\nWrite one question that this passage answers. The question must make '
    "sense on its own: name its subject, do not say 'the passage' or 'the text'. Reply with the question only."
)
_VAGUE = re.compile(r"\b(passage|the text|this text|this question|the document|the author|above)\b", re.I)


@dataclass
class SampledChunk:
    chunk_id: int
    document_id: int
    source: str
    title: str
    text: str  # as embedded: heading path, then the passage


@dataclass
class Pair:
    """A synthetic question and the chunk it was written from."""

    question: str
    chunk: SampledChunk

    def as_question(self, index: int) -> Question:
        """Scored against the chunk's document (its exact source path)."""
        return Question(f"syn{index}", self.question, source=glob.escape(self.chunk.source))


def sample_chunks(rag, collection: str, n: int, seed: int = 0, minimum: int = 1) -> list[SampledChunk]:
    """Up to `n` chunks, spread over the documents (round robin over them, in random order). Refuses a collection
    with fewer than `minimum` chunks: there is not enough to learn from."""
    with rag.sessions() as s:
        col = get_collection(s, collection)
        count = s.scalar(select(func.count()).select_from(RagChunk).where(RagChunk.collection_id == col.id)) or 0
        if count < minimum:
            raise InvalidRequest(
                f"Collection '{collection}' has {count} chunk(s); this needs at least {minimum}. "
                "Ingest more documents first.",
                param="collection",
            )
        rows = s.execute(
            select(RagChunk.id, RagChunk.document_id, RagDocument.source, RagDocument.title, RagChunk.heading,
                   RagChunk.text)
            .join(RagDocument, RagDocument.id == RagChunk.document_id)
            .where(RagChunk.collection_id == col.id)
            .order_by(RagChunk.id)
        ).all()  # fmt: skip
    rng = random.Random(seed)
    by_doc: dict[int, list] = {}
    for row in rows:
        by_doc.setdefault(row[1], []).append(row)
    for chunks in by_doc.values():
        rng.shuffle(chunks)
    docs = list(by_doc.values())
    rng.shuffle(docs)
    picked = []
    while len(picked) < n and any(docs):
        for chunks in docs:
            if chunks and len(picked) < n:
                picked.append(chunks.pop())
    return [_sampled(*row) for row in picked]


def _sampled(chunk_id, doc_id, source, title, heading, text) -> SampledChunk:
    name = title or source.rsplit("/", 1)[-1]
    return SampledChunk(chunk_id, doc_id, source, name, f"{heading}\n{text}" if heading else text)


def clean_question(text: str) -> str | None:
    """The model's first line as a question, or None when it is not one we can use."""
    line = next((ln.strip() for ln in text.strip().splitlines() if ln.strip()), "")
    line = re.sub(r"^(question\s*\d*\s*[:.-]|\d+[.)]|[-*])\s*", "", line, flags=re.I).strip().strip("\"'“”").strip()
    if not line.endswith("?") or not 12 <= len(line) <= 250 or _VAGUE.search(line):
        return None
    return line


async def write_questions(gateway: Gateway, model: str, chunks: list[SampledChunk], concurrency: int = 4) -> list[Pair]:
    """One question per chunk by `model` (greedy, so a rerun writes the same), the unusable ones dropped."""
    gate = asyncio.Semaphore(concurrency)

    async def one(chunk: SampledChunk) -> Pair | None:
        messages = [
            {"role": "system", "content": WRITER_SYSTEM},
            {"role": "user", "content": WRITER_USER.format(title=chunk.title, text=chunk.text[:1500])},
        ]
        async with gate:
            answer = await gateway.complete(
                model, generation_request(messages, {"max_tokens": 48, "temperature": 0}), CallContext(APP)
            )
        question = clean_question(answer.text)
        return Pair(question, chunk) if question else None

    return [p for p in await asyncio.gather(*(one(c) for c in chunks)) if p is not None]


def retrievable(rag, collection: str, pairs: list[Pair], k: int = RETRIEVABLE_K, mode: str = "hybrid") -> list[Pair]:
    """The pairs whose chunk's own document is in the top `k` hits (of retrieval `mode`) for the question."""
    kept = []
    for pair in pairs:
        hits = rag.search(collection, pair.question, top_k=k, mode=mode)
        if any(h.source == pair.chunk.source for h in hits):
            kept.append(pair)
    return kept


def synthetic_pairs(
    rag, gateway: Gateway, collection: str, model: str, n: int, minimum: int, seed: int = 0, mode: str = "hybrid"
) -> tuple[list[Pair], int]:
    """(kept pairs, questions written): `n` chunks sampled, a question each, filtered by retrievability under
    `mode` (`tune` filters by keywords alone, so that its held-out questions do not favour the model it replaces)."""
    chunks = sample_chunks(rag, collection, n, seed, minimum)
    settings = gateway.settings
    written = asyncio.run(write_questions(gateway, model, chunks, max(1, min(settings.parallel, 4))))
    gateway.writer.flush()
    return retrievable(rag, collection, written, mode=mode), len(written)


def check_documents(rag, collection: str, questions: list[Question]) -> None:
    """Refuse a question set whose answerable questions name documents the collection does not have."""
    with rag.sessions() as s:
        col = get_collection(s, collection)
        docs = s.execute(select(RagDocument.source, RagDocument.title).where(RagDocument.collection_id == col.id))
        docs = [(source, (title or "").casefold()) for source, title in docs]
    missing = [
        q.title or q.source
        for q in questions
        if q.answerable
        and not any(
            (q.source and fnmatch.fnmatchcase(src, q.source)) or (q.title and title == q.title.casefold())
            for src, title in docs
        )
    ]
    if missing:
        shown = ", ".join(sorted({str(m) for m in missing})[:8])
        raise InvalidRequest(
            f"The question set names {len(missing)} answer document(s) that collection '{collection}' does not "
            f"have: {shown}. Fix the titles/sources, or ingest those documents.",
            param="questions",
        )
