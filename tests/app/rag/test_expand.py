"""Query expansion (`expand="hyde"`): retrieval searches with the chat model's hypothetical answer, traced, while
the hits' similarity — what the "I don't know" threshold reads — stays the question's own."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select

from fmstack.app.rag import expand as expand_module
from fmstack.core.errors import InvalidRequest
from fmstack.core.store.schema import RagChunk, Trace
from fmstack.gateway import Gateway

from .helpers import formats_collection

pytestmark = pytest.mark.slow
CHAT = "smollm2-135m-instruct"
VAGUE = "Tell me what it is good for."  # names nothing: the passage decides what is found


@pytest.fixture(scope="module")
def docs(tmp_path_factory):
    rag = formats_collection(tmp_path_factory.mktemp("expand"))
    rag.gateway = Gateway(rag.settings, rag.sessions, rag.pool)
    yield rag
    rag.gateway.writer.close()


def question_similarity(rag, question: str, chunk_id: int) -> float:
    with rag.sessions() as s:
        blob = s.execute(select(RagChunk.embedding).where(RagChunk.id == chunk_id)).scalar_one()
    return float(np.frombuffer(blob, np.float32) @ rag.embed([question])[0])


def test_the_passage_steers_retrieval_but_similarity_stays_the_questions(docs, monkeypatch):
    passages = {
        "docs/kettle.md": "The Zephyr kettle boils one litre of water in three minutes and switches itself off.",
        "docs/lighthouse.html": "The Fresnel lens of the lighthouse focuses its lamp into a beam seen far out at sea.",
    }
    for source, passage in passages.items():
        monkeypatch.setattr(expand_module, "hyde_passage", lambda gateway, model, question, p=passage: p)
        hits = docs.search("docs", VAGUE, top_k=3, expand="hyde", expand_model=CHAT)
        assert hits[0].source == source  # the hypothetical answer's document comes first
        for hit in hits:
            assert hit.similarity == pytest.approx(question_similarity(docs, VAGUE, hit.chunk_id), abs=1e-3)


def test_hyde_with_the_real_model_is_traced_and_a_rerun_retrieves_the_same(docs):
    question = "Who invented the Fresnel lens?"
    first = docs.search("docs", question, top_k=5, expand="hyde", expand_model=CHAT)
    again = docs.search("docs", question, top_k=5, expand="hyde", expand_model=CHAT)
    assert [h.chunk_id for h in first] == [h.chunk_id for h in again]  # greedy: the same passage
    assert first[0].source == "docs/lighthouse.html"
    docs.gateway.writer.flush()
    with docs.sessions() as s:
        traces = s.execute(select(Trace).where(Trace.endpoint == "rag.expand")).scalars().all()
    assert len(traces) >= 2 and all(t.status == "ok" and t.app == "fmstack-rag" for t in traces)
    assert all(t.completion_tokens and t.completion_tokens <= expand_module.MAX_TOKENS for t in traces)


def test_an_unknown_expansion_is_refused_before_any_model_runs(docs):
    with pytest.raises(InvalidRequest, match="expand must be one of none, hyde") as error:
        docs.search("docs", "anything", expand="rewrite")
    assert error.value.param == "expand"
