"""RAG quality features on small collections, with the real models: the int8 ONNX backend (and that a collection
never mixes backends), contextual chunks, calibrated refusal used by the answer path, model-based reranking, and
index versions (a tuned model switched to atomically, the old one kept when a switch fails)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from sqlalchemy import select

from fmstack.app.rag import ChunkConfig
from fmstack.app.rag.calibrate import calibrate, choose_threshold, store
from fmstack.app.rag.chat import Retrieval, rag_chat
from fmstack.app.rag.embedders import EmbedderSpec
from fmstack.app.rag.evaluate import Question, evaluate
from fmstack.app.rag.rerank import yes_probability
from fmstack.app.rag.retrieve import _model_rerank
from fmstack.app.rag.synthetic import Pair, SampledChunk
from fmstack.app.rag.tune import TuneOptions, train_embedder
from fmstack.app.rag.versions import list_versions, stage, switch
from fmstack.core.errors import InvalidRequest
from fmstack.core.store.schema import RagChunk
from fmstack.engines.base import GenerationRequest
from fmstack.gateway import CallContext, Gateway

from .helpers import formats_collection

pytestmark = pytest.mark.slow
CHAT = "smollm2-135m-instruct"
DEFAULT = "sentence-transformers"


@pytest.fixture(scope="module")
def docs(tmp_path_factory):
    home = tmp_path_factory.mktemp("quality")
    return formats_collection(home), home


def stored_vectors(rag, name: str) -> dict[int, bytes]:
    cid = rag.collection(name).id
    with rag.sessions() as s:
        return dict(s.execute(select(RagChunk.id, RagChunk.embedding).where(RagChunk.collection_id == cid)).all())


def test_onnx_int8_vectors_agree_with_sentence_transformers_and_backends_never_mix(docs, tmp_path):
    rag, home = docs
    texts = ["The Zephyr kettle boils one litre of water in three minutes.", "Basalt columns form when lava cools."]
    onnx = rag.embedder(EmbedderSpec(rag.embedding_model, "onnx-int8"))(texts)
    torch = rag.embed(texts)
    assert onnx.shape == torch.shape and np.allclose(np.linalg.norm(onnx, axis=1), 1, atol=1e-4)
    assert (np.sum(onnx * torch, axis=1) > 0.98).all()

    rag.ingest(home / "docs", "fast", ChunkConfig(chunk_tokens=120, by="structure"), backend="onnx-int8")
    assert rag.collection("fast").embedding_backend == "onnx-int8"
    assert rag.search("fast", "Who invented the Fresnel lens?", top_k=1)[0].source == "docs/lighthouse.html"
    with pytest.raises(InvalidRequest, match="never mixes models.*reembed --collection fast --backend"):
        rag.ingest(home / "docs", "fast", ChunkConfig(chunk_tokens=120, by="structure"), backend=DEFAULT)
    with pytest.raises(InvalidRequest, match="--backend must be one of"):
        rag.ingest(home / "docs", "other", backend="openvino")


def test_contextual_chunks_put_the_title_in_the_indexed_heading_path(docs):
    rag, home = docs
    rag.ingest(home / "docs", "ctx", ChunkConfig(chunk_tokens=120, by="structure", contextual=True))
    hits = rag.search("ctx", "How often did keepers trim the wicks?", top_k=1)
    assert hits[0].heading == "Lighthouse guide > Lighthouses > Keepers"
    plain = rag.search("docs", "How often did keepers trim the wicks?", top_k=1)[0]
    assert plain.heading == "Lighthouses > Keepers" and plain.chunk_id != hits[0].chunk_id
    keyword = rag.search("ctx", "guide", top_k=3, mode="keyword")  # the title is keyword-indexed with each chunk
    assert {h.source for h in keyword} == {"docs/lighthouse.html"}
    assert ChunkConfig(contextual=True).key != ChunkConfig().key  # re-ingesting with it re-chunks every file


def test_threshold_choice_sits_in_the_widest_gap():
    assert choose_threshold([0.6, 0.7, 0.8], [0.2, 0.3, 0.4]) == 0.45  # a quarter up the gap: nearer "I don't know"
    assert choose_threshold([0.45, 0.7], [0.2, 0.5]) == 0.2625  # two best intervals: in the wider
    assert yes_probability([(" yes", np.log(0.6)), ("No", np.log(0.2))]) == pytest.approx(0.75)
    assert yes_probability([("maybe", -0.1)]) is None


def test_calibrate_stores_a_threshold_and_the_answer_path_uses_it(docs, tmp_path):
    rag, _ = docs
    gateway = Gateway(rag.settings, rag.sessions, rag.pool)
    rag.gateway = gateway
    hand = [
        Question("q1", "Who invented the Fresnel lens?", title="Lighthouse guide"),
        Question("q2", "How often should the Zephyr kettle be descaled?", source="docs/kettle.md"),
        Question("q3", "Which city did order 1001 ship to?", source="docs/orders.jsonl"),
        Question("q4", "How do I reset my router?", answerable=False),
    ]
    try:
        result = calibrate(rag, gateway, "docs", CHAT, samples=6, questions=hand, plot=tmp_path / "curve.png")
        assert rag.collection("docs").min_similarity == result.threshold == rag.threshold("docs")
        assert result.answerable >= 3 and result.unanswerable >= 30 and (tmp_path / "curve.png").stat().st_size
        # The threshold is the best cut of the scores it measured; how well they separate depends on the questions
        # SmolLM2 wrote (the benchmark measures that, with Qwen), so here only a floor.
        assert result.threshold == choose_threshold(result.scores["answerable"], result.scores["unanswerable"])
        assert result.idk_when_unanswerable + result.answered_when_answerable >= 1.5
        assert len(result.curve) == 101 and rag.collection("docs").calibration["threshold"] == result.threshold

        store(rag, result.__class__(**(result.as_dict() | {"threshold": 0.99})))  # nothing is that similar

        async def ask(how: Retrieval) -> tuple[str, dict]:
            call = gateway.call("rag.chat.completions", "chatcmpl", {}, CallContext("test"))
            messages = [{"role": "user", "content": "Who invented the Fresnel lens?"}]
            request = GenerationRequest(messages=messages, max_tokens=4, temperature=0)
            reply = await rag_chat(gateway, rag, call, "docs", CHAT, request, how)
            return "".join([d.text async for d in reply.deltas]), call.row["retrieval"]

        text, retrieval = asyncio.run(ask(Retrieval()))
        assert "I don't know" in text and retrieval["min_similarity"] == 0.99 and not retrieval["answered"]
        _, retrieval = asyncio.run(ask(Retrieval(min_similarity=0.3)))  # a request's own threshold wins
        assert retrieval["answered"] and retrieval["min_similarity"] == 0.3
        assert evaluate(rag, "docs", hand).threshold == 0.99
    finally:
        rag.gateway = None
        gateway.writer.close()


def test_llm_rerank_orders_by_the_models_judgement_and_is_measured(docs):
    rag, _ = docs
    gateway = Gateway(rag.settings, rag.sessions, rag.pool)
    rag.gateway = gateway
    try:
        plain = rag.search("docs", "Who invented the Fresnel lens?", top_k=20)
        ranked = rag.search("docs", "Who invented the Fresnel lens?", top_k=5, rerank="llm", rerank_model=CHAT)
        scores = [h.score for h in ranked]
        assert all(0 <= s <= 1 for s in scores) and scores == sorted(scores, reverse=True)
        assert {h.chunk_id for h in ranked} <= {h.chunk_id for h in plain}  # the fused candidates, re-ordered
        questions = [Question("q1", "Who invented the Fresnel lens?", title="Lighthouse guide")]
        # What the ranking is worth is measured (benchmarks/rag.py: SmolLM2 is a poor judge); here, that it is.
        measured = evaluate(rag, "docs", questions, k=5, rerank="llm", rerank_model=CHAT)
        assert measured.rerank == "llm" and set(measured.recall) == {"@1", "@3", "@5"}
        assert measured.recall["@1"] <= measured.mrr <= measured.recall["@5"]
        with pytest.raises(InvalidRequest, match="No cross-encoder"):
            rag.search("docs", "anything", rerank="cross-encoder")
    finally:
        rag.gateway = None
        gateway.writer.close()
    # A scorer's order replaces the fused one; candidates beyond its depth follow in fused order.
    assert _model_rerank([0.1, 0.9, 0.5], [0.3, 0.2, 0.1, 0.05], 4) == ([1, 2, 0, 3], [0.9, 0.5, 0.1, 0.05])


def pairs_of(rag, name: str) -> list[Pair]:
    cid = rag.collection(name).id
    with rag.sessions() as s:
        rows = s.execute(select(RagChunk.id, RagChunk.document_id, RagChunk.text).where(RagChunk.collection_id == cid))
        chunks = [SampledChunk(i, d, "", "", t) for i, d, t in rows]
    return [Pair(f"What does this say: {c.text[:40]}?", c) for c in chunks]


def test_a_tuned_model_is_a_new_index_version_switched_atomically(docs, monkeypatch):
    rag, home = docs
    rag.ingest(home / "docs", "tuned", ChunkConfig(chunk_tokens=120, by="structure"))
    old = stored_vectors(rag, "tuned")
    out = home / "tuned-model"
    train_embedder(rag.model_dir(), pairs_of(rag, "tuned"), out, TuneOptions(epochs=1, batch=4))
    spec = EmbedderSpec(rag.embedding_model, "sentence-transformers", str(out))

    # A switch that fails inside its transaction leaves the active version whole.
    staged = stage(rag, "tuned", spec, "test")
    monkeypatch.setattr("fmstack.app.rag.versions.utcnow", lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        switch(rag, staged)
    monkeypatch.undo()
    col = rag.collection("tuned")
    assert col.index_version == 1 and col.embedding_path is None and stored_vectors(rag, "tuned") == old
    assert [(v["version"], v["status"]) for v in list_versions(rag, "tuned")] == [(1, "active"), (2, "failed")]

    staged = stage(rag, "tuned", spec, "test")
    generation = switch(rag, staged, {"note": "verified"})
    col = rag.collection("tuned")
    assert (col.index_version, col.embedding_path, col.generation) == (3, str(out), generation)
    new = stored_vectors(rag, "tuned")
    assert new.keys() == old.keys() and all(new[i] != old[i] for i in old)  # every vector, by the tuned model
    versions = {v["version"]: v["status"] for v in list_versions(rag, "tuned")}
    assert versions == {1: "previous", 2: "failed", 3: "active"}
    hit = rag.search("tuned", "Who invented the Fresnel lens?", top_k=1)[0]  # queries embedded by the tuned model
    assert hit.source == "docs/lighthouse.html"

    from fmstack.app.rag.versions import activate

    activate(rag, "tuned", 1)  # the old version was kept: switch back to it
    assert rag.collection("tuned").index_version == 1 and stored_vectors(rag, "tuned") == old


def test_calibrating_or_tuning_an_empty_or_tiny_collection_exits_2_with_a_clear_message(tmp_path):
    from .test_rag_cli import fmstack

    home = tmp_path / "home"
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "basalt.txt").write_text("Basalt columns form when thick lava flows cool slowly.\n")
    assert fmstack(home, "ingest", str(tmp_path / "one"), "-c", "tiny").returncode == 0
    missing = fmstack(home, "calibrate", "-c", "nope")
    assert missing.returncode == 2 and "No collection named 'nope'" in missing.stderr
    tiny = fmstack(home, "calibrate", "-c", "tiny", "-m", CHAT)
    assert tiny.returncode == 2 and "has 1 chunk(s); this needs at least 4" in tiny.stderr
    tune = fmstack(home, "tune", "-c", "tiny", "-m", CHAT)
    assert tune.returncode == 2 and "needs at least 12" in tune.stderr and "Traceback" not in tune.stderr
    questions = tmp_path / "q.yaml"
    questions.write_text("- {question: 'Where is the Giant causeway?', title: Causeway guide}\n")
    named = fmstack(home, "calibrate", "-c", "tiny", "--questions", str(questions))
    assert named.returncode == 2 and "does not have: Causeway guide" in named.stderr
    backend = fmstack(home, "reembed", "-c", "tiny", "--backend", "sentence-transformers")
    assert backend.returncode == 2 and "already embedded by" in backend.stderr
    listed = fmstack(home, "versions", "-c", "tiny", "--json")
    assert listed.returncode == 0 and '"status": "active"' in listed.stdout
