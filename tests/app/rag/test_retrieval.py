"""Hybrid retrieval over real Wikipedia articles: the right article for known questions, filters, citations that
point at the exact text, and "I don't know" for questions the collection cannot answer."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fmstack.app.rag import Filters
from fmstack.app.rag.answer import MIN_SIMILARITY
from fmstack.app.rag.corpus import write_wiki_corpus
from fmstack.app.rag.evaluate import evaluate, load_questions
from fmstack.app.rag.keyword import keyword_search
from fmstack.core.errors import InvalidRequest, NotFound

from .helpers import JSONL, WIKI_TITLES, make_rag

pytestmark = pytest.mark.slow  # embeds ~1,000 chunks once for the module

QUESTIONS = Path(__file__).resolve().parents[3] / "examples" / "rag" / "questions.yaml"


@pytest.fixture(scope="module")
def wiki(tmp_path_factory):
    root = tmp_path_factory.mktemp("rag-wiki")
    write_wiki_corpus(root / "wiki", WIKI_TITLES)
    (root / "wiki" / "orders.jsonl").write_text(JSONL)
    rag = make_rag(root / "home")
    report = rag.ingest(root / "wiki", "wiki")
    assert not report.skipped
    return rag, root


def known_questions() -> list:
    return [q for q in load_questions(QUESTIONS) if q.answerable and q.title in WIKI_TITLES]


def test_hybrid_retrieval_finds_the_article_of_known_questions(wiki):
    rag, _ = wiki
    questions = known_questions()
    assert len(questions) >= 12
    result = evaluate(rag, "wiki", questions, k=5)
    assert result.recall["@5"] == 1.0, result.missed()
    assert result.recall["@1"] >= 0.8 and result.mrr >= 0.85


def test_both_retrievers_contribute_and_are_fused(wiki):
    rag, _ = wiki
    hits = rag.search("wiki", "Who directed the 1997 film Actresses (Actrius)?", top_k=5)
    assert hits[0].source == "wiki/Actrius.txt" and hits[0].vector_rank and hits[0].keyword_rank
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    expected = 1 / (60 + hits[0].vector_rank) + 1 / (60 + hits[0].keyword_rank)
    assert hits[0].score == pytest.approx(expected, abs=1e-6)
    # bm25 alone finds a rare exact term
    with rag.sessions() as s:
        collection = rag.collection("wiki")
        top = keyword_search(s, collection.id, "Vatnajokull OR Borman", 3)
    assert top and "Borman" in rag.search("wiki", "Frank Borman", top_k=1)[0].text


@pytest.mark.parametrize("rerank", ["similarity", "mmr"])
def test_rerankers_keep_the_right_article_on_top(wiki, rerank):
    rag, _ = wiki
    hits = rag.search("wiki", "Who was the first person to step onto the lunar surface?", top_k=5, rerank=rerank)
    assert hits[0].source == "wiki/Apollo 11.txt"
    if rerank == "similarity":
        assert [h.similarity for h in hits] == sorted((h.similarity for h in hits), reverse=True)
    else:
        assert len({h.chunk_id for h in hits}) == 5


def test_citations_map_to_the_exact_text_of_the_source(wiki):
    rag, root = wiki
    for hit in rag.search("wiki", "What is the capital of Algeria?", top_k=5):
        source = (root / hit.source).read_text()
        assert source[hit.char_start : hit.char_end] == hit.text
        assert hit.location().endswith(f"chars {hit.char_start}–{hit.char_end}")


def test_filters_by_source_glob_and_metadata(wiki):
    rag, _ = wiki
    hits = rag.search("wiki", "capital city", top_k=10, filters=Filters(source="wiki/Al*.txt"))
    assert hits and {h.source for h in hits} <= {"wiki/Alaska.txt", "wiki/Alberta.txt", "wiki/Algeria.txt",
                                                  "wiki/Albert Einstein.txt", "wiki/Alabama.txt"}  # fmt: skip
    only_2023 = rag.search("wiki", "Where was the order shipped?", top_k=5, filters=Filters(metadata={"year": 2023}))
    assert [h.line for h in only_2023] == [3]
    finance = rag.search("wiki", "order", top_k=5, filters=Filters(metadata={"team": "finance"}))
    assert [h.text[:11] for h in finance] == ["Invoice 77 "]
    pdfs = rag.search("wiki", "order", top_k=5, filters=Filters(metadata={"format": "pdf"}))
    assert pdfs == []


def test_unrelated_questions_fall_below_the_threshold(wiki):
    rag, _ = wiki
    unrelated = [q.question for q in load_questions(QUESTIONS) if not q.answerable]
    assert len(unrelated) >= 6
    for question in unrelated:
        best = rag.search("wiki", question, top_k=5)[0].similarity
        assert best < MIN_SIMILARITY, (question, best)
    for q in known_questions():
        assert rag.search("wiki", q.question, top_k=1)[0].similarity >= MIN_SIMILARITY, q.question


def test_bad_requests_are_clear_errors(wiki):
    rag, _ = wiki
    with pytest.raises(NotFound, match="No collection named 'nope'. Known collections: wiki"):
        rag.search("nope", "anything")
    with pytest.raises(InvalidRequest, match="rerank"):
        rag.search("wiki", "anything", rerank="colbert")
    with pytest.raises(InvalidRequest, match="No cross-encoder at .*fmstack rag tune --cross-encoder"):
        rag.search("wiki", "anything", rerank="cross-encoder")
    with pytest.raises(InvalidRequest, match="empty"):
        rag.search("wiki", "  ")


def test_the_question_set_is_well_formed():
    data = yaml.safe_load(QUESTIONS.read_text())["questions"]
    assert len({q["id"] for q in data}) == len(data) >= 30
