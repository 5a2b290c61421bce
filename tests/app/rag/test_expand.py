"""Query expansion (`expand="hyde"`): retrieval searches with the chat model's hypothetical answer, traced; the
hits' similarity — what the "I don't know" gate reads — is the answer's, and its threshold is calibrated apart."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from sqlalchemy import select

from fmstack.app.rag import expand as expand_module
from fmstack.app.rag.calibrate import calibrate, store
from fmstack.app.rag.collections import get_collection
from fmstack.app.rag.evaluate import Question, evaluate
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


def similarity(rag, text: str, chunk_id: int) -> float:
    with rag.sessions() as s:
        blob = s.execute(select(RagChunk.embedding).where(RagChunk.id == chunk_id)).scalar_one()
    return float(np.frombuffer(blob, np.float32) @ rag.embed([text])[0])


def test_the_passage_steers_retrieval_and_the_gate_reads_its_similarity(docs, monkeypatch):
    passages = {
        "docs/kettle.md": "The Zephyr kettle boils one litre of water in three minutes and switches itself off.",
        "docs/lighthouse.html": "The Fresnel lens of the lighthouse focuses its lamp into a beam seen far out at sea.",
    }
    for source, passage in passages.items():
        monkeypatch.setattr(expand_module, "hyde_passage", lambda gateway, model, question, p=passage: p)
        hits = docs.search("docs", VAGUE, top_k=3, expand="hyde", expand_model=CHAT)
        assert hits[0].source == source  # the hypothetical answer's document comes first
        for hit in hits:
            assert hit.similarity == pytest.approx(similarity(docs, passage, hit.chunk_id), abs=1e-3)
        assert hits[0].similarity > similarity(docs, VAGUE, hits[0].chunk_id) + 0.2  # the question names nothing


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


def test_calibrating_with_hyde_sets_the_threshold_of_expanded_searches_alone(docs, monkeypatch):
    """Two signals, two thresholds: `calibrate(expand="hyde")` stores its own beside the plain one, searches and
    evaluations that expand read it, and a later plain calibration keeps it."""
    monkeypatch.setattr(expand_module, "hyde_passage", lambda gateway, model, question: f"About this: {question}")
    with docs.sessions.begin() as s:
        get_collection(s, "docs").min_similarity = 0.42
    hand = [
        Question("q1", "Who invented the Fresnel lens?", title="Lighthouse guide"),
        Question("q2", "How often should the Zephyr kettle be descaled?", source="docs/kettle.md"),
        Question("q3", "Which city did order 1001 ship to?", source="docs/orders.jsonl"),
    ]
    result = calibrate(docs, docs.gateway, "docs", CHAT, samples=6, questions=hand, expand="hyde", expand_model=CHAT)
    assert result.expand == "hyde" and result.previous is None  # never calibrated with hyde before
    stored = docs.collection("docs").calibration["hyde"]
    assert docs.threshold("docs", "hyde") == result.threshold == stored["threshold"]
    assert docs.threshold("docs") == 0.42  # the plain threshold is untouched
    assert evaluate(docs, "docs", hand[:1], expand="hyde", expand_model=CHAT).threshold == result.threshold
    assert evaluate(docs, "docs", hand[:1]).threshold == 0.42
    store(docs, replace(result, expand="none", threshold=0.5))
    assert (docs.threshold("docs"), docs.threshold("docs", "hyde")) == (0.5, result.threshold)
