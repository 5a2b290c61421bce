"""Retrieval quality on a question set: recall@k and MRR against the document each question's answer is in.

A question set is YAML or JSONL. Either a list of items (or `{questions: [...]}`) with
    question     the question
    title        the answer's document title (a file's name without extension, a Markdown H1, an HTML <title>)
    source       or a glob over the cited source path ("wiki/Alaska.txt")
    reference    the expected answer (optional: for answer metrics)
    answerable   false for a question the collection cannot answer (measures the "I don't know" threshold)
or an eval suite (examples/eval/wiki_qa.yaml): `cases` with `vars.question`, `reference`, `metadata.article`.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from fmstack.app.rag.answer import ground
from fmstack.app.rag.retrieve import Hit
from fmstack.core.errors import FmstackError

KS = (1, 3, 5, 10)


@dataclass
class Question:
    id: str
    question: str
    title: str | None = None
    source: str | None = None
    reference: str | list[str] | None = None
    answerable: bool = True

    def answers(self, hit: Hit) -> bool:
        """The chunk states the reference answer (any of them), case-insensitively."""
        refs = [self.reference] if isinstance(self.reference, str) else list(self.reference or [])
        return any(str(r).casefold() in hit.text.casefold() for r in refs)

    def relevant(self, hit: Hit) -> bool:
        if self.source and fnmatch.fnmatchcase(hit.source, self.source):
            return True
        return bool(self.title) and (hit.title or "").casefold() == self.title.casefold()


@dataclass
class QuestionResult:
    id: str
    question: str
    answerable: bool
    rank: int | None  # of the first chunk of the right document, 1-based
    answer_rank: int | None  # of the first chunk that states the reference answer
    top_similarity: float | None
    sources: list[str] = field(default_factory=list)


@dataclass
class RetrievalEval:
    """Recall@k and MRR@k against each question's document (and passage, with a reference answer), and how the
    similarity threshold separates answerable from unanswerable questions. `to_dict()` is the JSON that
    `rag eval -o` writes; the questions asked and their hits are kept to write eval-suite cases from."""

    collection: str
    questions: int  # answerable ones
    unanswerable_questions: int
    k: int
    rerank: str
    mode: str
    recall: dict[str, float]  # "@1", "@3"… (depths up to k)
    mrr: float
    answer_recall: dict[str, float]  # passage level; empty when no question has a reference
    answer_mrr: float | None
    threshold: float
    answered_when_answerable: float
    idk_when_unanswerable: float | None
    top_similarity: dict[str, list[float]]
    results: list[QuestionResult]
    asked: list[Question] = field(repr=False)
    hits: dict[str, list[Hit]] = field(repr=False)  # by question id

    def to_dict(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("asked", "hits")}
        return data | {"results": [asdict(r) for r in self.results]}

    def missed(self) -> list[QuestionResult]:
        """Answerable questions whose document is not in the top k."""
        return [r for r in self.results if r.answerable and r.rank is None]

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2))

    def cases(self, top_k: int = 5) -> list[dict]:
        """Eval-suite cases (JSONL rows for `include: [{file: ...}]`): the grounded messages the model would get,
        the retrieved passages as `context` (for faithfulness and context recall) and the reference."""
        rows = []
        for q in self.asked:
            if not q.answerable:
                continue
            grounding = ground([{"role": "user", "content": q.question}], self.hits[q.id][:top_k], self.threshold)
            rows.append(
                {
                    "id": q.id,
                    "messages": grounding.messages,
                    "context": [s["text"] for s in grounding.sources],
                    "reference": q.reference,
                    "vars": {"question": q.question},
                    "metadata": {"title": q.title, "sources": [s["source"] for s in grounding.sources]},
                }
            )
        return rows

    def write_cases(self, path: Path, top_k: int = 5) -> int:
        """`cases(top_k)` as JSONL; returns how many were written."""
        rows = self.cases(top_k)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        return len(rows)


def load_questions(path: Path) -> list[Question]:
    import yaml

    try:
        if path.suffix.lower() == ".jsonl":
            items = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        else:
            items = yaml.safe_load(path.read_text())
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise FmstackError(f"{path}: cannot read the question set ({exc}).") from None
    if isinstance(items, dict):
        items = items.get("questions") or items.get("cases")
    if not isinstance(items, list) or not items:
        raise FmstackError(f"{path}: expected a list of questions (or an eval suite with 'cases').")
    out = []
    for i, item in enumerate(items, 1):
        if not isinstance(item, dict):
            raise FmstackError(f"{path}: item {i} is not a mapping.")
        question = item.get("question") or (item.get("vars") or {}).get("question") or item.get("input")
        if not question:
            raise FmstackError(f"{path}: item {i} has no 'question' (or vars.question).")
        meta = item.get("metadata") or {}
        title = item.get("title") or meta.get("article") or meta.get("title")
        answerable = bool(item.get("answerable", True))
        if answerable and not (title or item.get("source")):
            raise FmstackError(f"{path}: item {i} says neither 'title' nor 'source' of its answer.")
        out.append(
            Question(
                str(item.get("id") or f"q{i}"),
                str(question),
                title,
                item.get("source"),
                item.get("reference"),
                answerable,
            )
        )
    return out


def evaluate(
    rag,
    collection: str,
    questions: list[Question],
    k: int = 10,
    rerank: str | None = None,
    mode: str = "hybrid",
    **search,
) -> RetrievalEval:
    """Run every question through retrieval; recall@k (a relevant chunk in the top k), MRR@k, and how the
    collection's "I don't know" threshold separates answerable from unanswerable questions. `search` goes to
    `Rag.search` (`rerank_model`; `embed` and `index` to evaluate an index version before switching to it)."""
    threshold = rag.threshold(collection, search.get("expand"))
    results: list[QuestionResult] = []
    hits_by_question: dict[str, list[Hit]] = {}
    for q in questions:
        hits = rag.search(collection, q.question, top_k=k, rerank=rerank, mode=mode, **search)
        hits_by_question[q.id] = hits
        rank = next((i for i, h in enumerate(hits, 1) if q.relevant(h)), None) if q.answerable else None
        answer_rank = None
        if q.answerable and q.reference:
            answer_rank = next((i for i, h in enumerate(hits, 1) if q.relevant(h) and q.answers(h)), None)
        results.append(
            QuestionResult(
                q.id,
                q.question,
                q.answerable,
                rank,
                answer_rank,
                max((h.similarity for h in hits), default=None),
                [h.source for h in hits[:3]],
            )
        )
    answerable = [r for r in results if r.answerable]
    unanswerable = [r for r in results if not r.answerable]
    with_ref = [r for r, q in zip(results, questions, strict=True) if q.answerable and q.reference]
    n = len(answerable) or 1
    return RetrievalEval(
        collection=collection,
        questions=len(answerable),
        unanswerable_questions=len(unanswerable),
        k=k,
        rerank=rerank or "none",
        mode=mode,
        recall={f"@{c}": sum(r.rank is not None and r.rank <= c for r in answerable) / n for c in KS if c <= k},
        mrr=sum(1 / r.rank for r in answerable if r.rank) / n,
        # passage level: a chunk of the right document that states the reference answer
        answer_recall={
            f"@{c}": sum(r.answer_rank is not None and r.answer_rank <= c for r in with_ref) / len(with_ref)
            for c in KS
            if c <= k and with_ref
        },
        answer_mrr=sum(1 / r.answer_rank for r in with_ref if r.answer_rank) / len(with_ref) if with_ref else None,
        threshold=threshold,
        answered_when_answerable=sum((r.top_similarity or 0) >= threshold for r in answerable) / n,
        idk_when_unanswerable=(
            sum((r.top_similarity or 0) < threshold for r in unanswerable) / len(unanswerable) if unanswerable else None
        ),
        top_similarity={
            "answerable": sorted(r.top_similarity or 0 for r in answerable),
            "unanswerable": sorted(r.top_similarity or 0 for r in unanswerable),
        },
        results=results,
        asked=questions,
        hits=hits_by_question,
    )
