"""Retrieval that learns the collection: `fmstack rag tune`.

1. The local chat model writes a question for each of `samples` chunks; a question is kept when bm25 finds its
   chunk's document in the top 10 (`synthetic.retrievable`, keyword mode: a filter that does not favour the
   embedding model being replaced, so the held-out comparison is fair).
2. A share is held out; the rest fine-tune the collection's embedding model (MiniLM, or its last tuned version)
   with MultipleNegativesRankingLoss: each question against its passage, the other passages of the batch as
   negatives (the sentence-transformers recipe for (query, passage) pairs without labels).
3. The collection is re-embedded by the tuned model into a new index version (`versions.stage`), and recall/MRR
   on the held-out questions (and on a hand-written set, if given) are measured with the old and the new vectors.
4. The new version is switched to only when it is no worse on every set (MRR not lower, recall@10 lower by at
   most one question); otherwise it is kept as `rejected` and the collection never changed.
5. With `cross_encoder`, a MiniLM cross-encoder is trained on the same pairs (the passage: 1; the best-ranked
   passages of other documents: 0) for `rerank="cross-encoder"`, and measured on the held-out questions.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fmstack.app.rag.collections import index_dir, spec_of
from fmstack.app.rag.embedders import EmbedderSpec
from fmstack.app.rag.evaluate import Question, RetrievalEval, evaluate
from fmstack.app.rag.synthetic import Pair, check_documents, synthetic_pairs
from fmstack.app.rag.versions import new_version, reject, set_spec, stage, switch
from fmstack.core.errors import InvalidRequest
from fmstack.gateway import Gateway

MIN_CHUNKS = 12
MIN_PAIRS = 8
NEGATIVES = 3  # hard negatives per question for the cross-encoder


@dataclass
class TuneOptions:
    samples: int = 200
    held_out: float = 0.25
    epochs: int = 2
    batch: int = 16
    learning_rate: float = 5e-5
    seed: int = 0
    cross_encoder: bool = False


@dataclass
class TuneReport:
    collection: str
    version: int
    switched: bool
    reason: str
    written: int
    kept: int
    train: int
    held_out: int
    before: dict
    after: dict
    question_set: dict = field(default_factory=dict)  # {"before": …, "after": …} on the hand-written set
    cross_encoder: dict | None = None  # {"path", "before", "after"} on the held-out questions
    model_path: str = ""
    seconds: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def summary(result: RetrievalEval) -> dict:
    return {"recall": result.recall, "mrr": round(result.mrr, 4), "questions": result.questions}


def no_worse(before: RetrievalEval, after: RetrievalEval) -> bool:
    """MRR not lower and recall@10 lower by at most one question: small held-out sets are noisy."""
    slack = 1 / max(before.questions, 1)
    return after.mrr >= before.mrr and after.recall["@10"] >= before.recall["@10"] - slack - 1e-9


def split(pairs: list[Pair], share: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """(train, held out): whole documents are held out, so a held-out question's passage was never trained on."""
    docs = sorted({p.chunk.document_id for p in pairs})
    random.Random(seed).shuffle(docs)
    held: set[int] = set()
    for doc in docs:
        if sum(p.chunk.document_id in held for p in pairs) >= max(3, round(len(pairs) * share)):
            break
        held.add(doc)
    train = [p for p in pairs if p.chunk.document_id not in held]
    test = [p for p in pairs if p.chunk.document_id in held]
    if len(train) < MIN_PAIRS // 2 or len(docs) < 2:  # too few documents to hold whole ones out: hold out pairs
        shuffled = pairs[:]
        random.Random(seed).shuffle(shuffled)
        n = max(3, round(len(pairs) * share))
        test, train = shuffled[:n], shuffled[n:]
    return train, test


def tune(
    rag,
    gateway: Gateway,
    collection: str,
    model: str,
    options: TuneOptions | None = None,
    questions: list[Question] | None = None,
) -> TuneReport:
    """Tune the collection's embedding model on synthetic questions; switch to it if it is verified no worse."""
    o = options or TuneOptions()
    if questions:
        check_documents(rag, collection, questions)
    started = time.perf_counter()
    pairs, written = synthetic_pairs(rag, gateway, collection, model, o.samples, MIN_CHUNKS, o.seed, mode="keyword")
    if len(pairs) < MIN_PAIRS:
        raise InvalidRequest(
            f"Only {len(pairs)} of {written} questions the model wrote about collection '{collection}' are usable "
            f"(at least {MIN_PAIRS} are needed): ingest more documents, raise --samples, or use a better --model.",
            param="collection",
        )
    train, test = split(pairs, o.held_out, o.seed)
    held = [p.as_question(i) for i, p in enumerate(test)]
    seconds = {"questions": time.perf_counter() - started}
    before = evaluate(rag, collection, held)
    set_before = evaluate(rag, collection, questions) if questions else None
    current = spec_of(rag.collection(collection))
    col = rag.collection(collection)
    version = new_version(rag, collection, current, "tune")
    out = index_dir(rag.settings.home, col) / "models" / f"v{version}"
    spec = EmbedderSpec(current.model, "sentence-transformers", str(out))
    try:
        t0 = time.perf_counter()
        base = Path(current.path) if current.path else rag.model_dir()
        train_embedder(base, train, out, o)
        seconds["train"] = time.perf_counter() - t0
    except Exception as exc:
        reject(rag, collection, version, f"failed: training: {exc}", "failed")
        raise
    set_spec(rag, collection, version, spec)
    t0 = time.perf_counter()
    staged = stage(rag, collection, spec, "tune", version)
    seconds["reembed"] = time.perf_counter() - t0
    after = evaluate(rag, collection, held, **staged.search_options())
    set_after = evaluate(rag, collection, questions, **staged.search_options()) if questions else None
    verified = no_worse(before, after) and (set_before is None or no_worse(set_before, set_after))
    report = TuneReport(
        collection, version, verified, "", written, len(pairs), len(train), len(test), summary(before), summary(after)
    )
    report.model_path, report.seconds = str(out), seconds
    if set_before is not None:
        report.question_set = {"before": summary(set_before), "after": summary(set_after)}
    if verified:
        report.reason = "verified: no worse on the held-out questions" + (" and the question set" if questions else "")
        switch(rag, staged, report.as_dict())
    else:
        report.reason = "rejected: worse than the active version on held-out questions; the collection is unchanged"
        reject(rag, collection, version, report.reason, report=report.as_dict())
    if o.cross_encoder:
        report.cross_encoder = tune_cross_encoder(rag, collection, train, held, o)
    seconds["total"] = time.perf_counter() - started
    return report


def train_embedder(base: Path, pairs: list[Pair], out: Path, o: TuneOptions) -> None:
    """Fine-tune `base` on (question, passage) pairs with MultipleNegativesRankingLoss; save it to `out`."""
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
        losses,
    )
    from sentence_transformers.training_args import BatchSamplers

    model = SentenceTransformer(str(base), device="cpu", local_files_only=True)
    data = Dataset.from_dict({"anchor": [p.question for p in pairs], "positive": [p.chunk.text for p in pairs]})
    with tempfile.TemporaryDirectory(prefix="fmstack-tune-") as tmp:
        args = SentenceTransformerTrainingArguments(
            output_dir=tmp,
            num_train_epochs=o.epochs,
            per_device_train_batch_size=min(o.batch, len(pairs)),
            learning_rate=o.learning_rate,
            warmup_ratio=0.1,
            seed=o.seed,
            save_strategy="no",
            report_to="none",
            batch_sampler=BatchSamplers.NO_DUPLICATES,
            use_cpu=True,
            disable_tqdm=True,
            logging_strategy="no",
        )
        loss = losses.MultipleNegativesRankingLoss(model)
        SentenceTransformerTrainer(model=model, args=args, train_dataset=data, loss=loss).train()
    _save_atomically(out, model.save)


def _save_atomically(out: Path, save) -> None:
    """Write a model folder beside `out`, then rename it into place: a half-written model is never loaded."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save(str(tmp))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)


def tune_cross_encoder(rag, collection: str, train: list[Pair], held: list[Question], o: TuneOptions) -> dict:
    """Train the collection's MiniLM cross-encoder on the training pairs; recall/MRR on the held-out questions
    without it and with it."""
    from fmstack.app.rag.rerank import cross_encoder_path, forget_cross_encoder

    col = rag.collection(collection)
    path = cross_encoder_path(rag, col)
    before = evaluate(rag, collection, held)
    t0 = time.perf_counter()
    rows = _cross_encoder_rows(rag, collection, train)
    train_cross_encoder(rag.model_dir(), rows, path, o)
    forget_cross_encoder(path)
    seconds = time.perf_counter() - t0
    after = evaluate(rag, collection, held, rerank="cross-encoder")
    return {"path": str(path), "pairs": len(rows), "seconds": seconds, "before": summary(before),
            "after": summary(after)}  # fmt: skip


def _cross_encoder_rows(rag, collection: str, pairs: list[Pair]) -> list[tuple[str, str, float]]:
    """(question, passage, label): its own passage 1, the best hits from other documents 0 (hard negatives)."""
    rows = []
    for p in pairs:
        rows.append((p.question, p.chunk.text, 1.0))
        hits = rag.search(collection, p.question, top_k=NEGATIVES + 5)
        others = [h for h in hits if h.source != p.chunk.source][:NEGATIVES]
        rows += [(p.question, f"{h.heading}\n{h.text}" if h.heading else h.text, 0.0) for h in others]
    return rows


def train_cross_encoder(base: Path, rows: list[tuple[str, str, float]], out: Path, o: TuneOptions) -> None:
    """A CrossEncoder on MiniLM's body with a new one-logit head, trained with binary cross-entropy."""
    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    model = CrossEncoder(str(base), num_labels=1, device="cpu", max_length=320)
    data = Dataset.from_dict(
        {"query": [r[0] for r in rows], "passage": [r[1] for r in rows], "label": [r[2] for r in rows]}
    )
    with tempfile.TemporaryDirectory(prefix="fmstack-tune-ce-") as tmp:
        args = CrossEncoderTrainingArguments(
            output_dir=tmp,
            num_train_epochs=max(o.epochs, 2),
            per_device_train_batch_size=min(o.batch, len(rows)),
            learning_rate=o.learning_rate,
            warmup_ratio=0.1,
            seed=o.seed,
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            disable_tqdm=True,
            logging_strategy="no",
        )
        CrossEncoderTrainer(model=model, args=args, train_dataset=data, loss=BinaryCrossEntropyLoss(model)).train()
    _save_atomically(out, model.save)
