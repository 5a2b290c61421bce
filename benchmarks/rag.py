"""RAG benchmark: ingestion against the embedding model alone, re-ingestion, and the vector index at 100k and 1M.

1. Ingestion: the packaged Wikipedia articles (gensim test data, 100 articles, 3.1 M characters) ingested into a
   fresh store by `Rag.ingest` (parse, chunk by tokens 200/40, hash, embed, store, index, save), against the
   embedding model's own `encode` on exactly the same chunk texts, batched the same way (the model loaded
   beforehand in both). Goal: pipeline overhead ≤ 10 %.
2. Re-ingesting the unchanged folder (goal ≤ 2 % of the first ingestion), and after editing one article (only
   that article's changed chunks are embedded).
3. Hybrid retrieval end to end on that collection (question embedding + bm25 + HNSW + fusion + reading the
   chunks): p50/p95 over the example questions.
4. The vector index (fmstack.app.rag.index, hnswlib) at 100k and 1M vectors: build time, single-query p50/p95
   latency and recall@10 against exact NumPy search on the same vectors, for ef = 32/64/128. The vectors are
   synthetic but clustered like real ones: each is a real MiniLM chunk embedding of the Wikipedia articles,
   moved towards two of its 10 nearest real neighbours (random weights up to 0.5) plus Gaussian noise (σ 0.02 per
   dimension), normalized; 200 queries are drawn the same way (not in the index). Goal: p95 ≤ 20 ms at 1M with
   recall@10 ≥ 0.95. With `--candidates`, the same at 100k for usearch (f32/f16/i8), faiss (HNSWFlat, IVFFlat)
   and sqlite-vec: how the library was chosen.
5. Retrieval quality (`--quality`), on two corpora with hand-written question sets: the Wikipedia example (its 30
   question articles and 10 others) and the docstrings of 36 Python standard-library modules
   (examples/rag/make_stdlib_corpus.py, stdlib_questions.yaml). Recall@k, MRR@10, p50/p95 search latency and the
   answerable/unanswerable split for: keyword, vector, hybrid; the int8 ONNX backend (and its chunks/s against
   sentence-transformers'); contextual chunks; LLM reranking (SmolLM2, 20 candidates); query expansion by a
   hypothetical answer (HyDE, written by Qwen2.5-0.5B and by SmolLM2); the calibrated threshold; the tuned embedding
   model; the tuned cross-encoder. Writes results/rag-quality-stdlib-wiki.json and the calibration curves.

    .venv/bin/python benchmarks/rag.py             # everything, ~30 min on 2 cores
    .venv/bin/python benchmarks/rag.py --quick     # smoke: 10 articles, 20k vectors (~2 min)
    .venv/bin/python benchmarks/rag.py --quality   # section 5 alone (~1.5 h on 2 cores)
    .venv/bin/python benchmarks/rag.py --quality --only hyde   # some of its rows, merged into the last run's

Writes results/rag.json and results/rag.png.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
QUESTIONS = HERE.parent / "examples" / "rag" / "questions.yaml"
QUICK_TITLES = [
    "Abraham Lincoln", "Aristotle", "An American in Paris", "Actrius", "Algeria",
    "Andre Agassi", "Alaska", "Apollo 11", "Albert Einstein", "Alberta",
]  # fmt: skip


def percentiles(ms: list[float]) -> dict:
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)), "n": len(ms)}


def ingestion(work: Path, quick: bool) -> tuple[dict, np.ndarray]:
    os.environ["FMSTACK_HOME"] = str(work / "home")
    os.environ.pop("FMSTACK_DATABASE_URL", None)
    from sqlalchemy import select

    from fmstack.app.rag import ChunkConfig, Rag
    from fmstack.app.rag.chunking import Chunk, chunk_document
    from fmstack.app.rag.corpus import write_wiki_corpus
    from fmstack.app.rag.loaders import parse_file
    from fmstack.core.config import get_settings
    from fmstack.core.registry import Registry
    from fmstack.core.store import open_store
    from fmstack.core.store.schema import RagChunk
    from fmstack.engines.pool import EnginePool

    corpus = work / "wiki"
    files = write_wiki_corpus(corpus, QUICK_TITLES if quick else None)
    settings = get_settings()
    sessions = open_store(settings)
    pool = EnginePool(Registry(settings), settings)
    rag = Rag(sessions, settings, pool)
    engine = pool.embedding(settings.embedding_model)  # loaded before any timing
    engine.embed(["warm up"])

    def model_alone(texts: list[str]) -> tuple[float, float]:
        """(wall, CPU) seconds of the model's own encode of all `texts` in one call: sentence-transformers sorts
        them by length and batches 64 at a time, its best case (the pipeline embeds ~256 chunks per call)."""
        wall, cpu = time.perf_counter(), time.process_time()
        engine.embed(texts, truncate=True)
        return time.perf_counter() - wall, time.process_time() - cpu

    # The model alone before and after the pipeline, on the same chunk texts: the machine is shared, and the
    # two passes bracket the pipeline's run in time. CPU time (all threads of this process) is also recorded:
    # it does not count time other processes took from us.
    before = [c.embed_text for f in files for c in chunk_document(parse_file(f, f.read_bytes()), ChunkConfig(),
                                                                   rag.tokenizer())]  # fmt: skip
    before_s = model_alone(before)
    wall, cpu = time.perf_counter(), time.process_time()
    first = rag.ingest(corpus, "wiki", ChunkConfig())
    ingest_s, ingest_cpu = time.perf_counter() - wall, time.process_time() - cpu
    with sessions() as s:
        rows = s.execute(select(RagChunk.heading, RagChunk.text).order_by(RagChunk.id)).all()
        vectors = np.frombuffer(
            b"".join(s.scalars(select(RagChunk.embedding).order_by(RagChunk.id))), np.float32
        ).reshape(len(rows), -1)
    texts = [Chunk(text, 0, 0, 0, (heading,) if heading else ()).embed_text for heading, text in rows]
    after_s = model_alone(texts)
    n = first.chunks_added
    # per chunk, scaled to the pipeline's chunks (the pipeline stores a passage repeated in a document once)
    model_s = (before_s[0] / len(before) + after_s[0] / len(texts)) / 2 * n
    model_cpu = (before_s[1] / len(before) + after_s[1] / len(texts)) / 2 * n

    t0 = time.perf_counter()
    again = rag.ingest(corpus, "wiki", ChunkConfig())
    reingest_s = time.perf_counter() - t0
    edited = files[0]
    edited.write_text(edited.read_text() + "\nAn added closing paragraph, to re-ingest one changed file.\n")
    t0 = time.perf_counter()
    changed = rag.ingest(corpus, "wiki", ChunkConfig())
    changed_s = time.perf_counter() - t0

    import yaml

    questions = [q["question"] for q in yaml.safe_load(QUESTIONS.read_text())["questions"]]
    latencies = []
    for q in questions * 3:
        t0 = time.perf_counter()
        rag.search("wiki", q, top_k=5)
        latencies.append((time.perf_counter() - t0) * 1000)
    pool.close()
    result = {
        "articles": len(files),
        "characters": sum(len(p.read_text()) for p in files),
        "chunks": n,
        "ingest_s": ingest_s,
        "ingest_embed_s": first.embed_seconds,
        "ingest_chunks_per_s": n / ingest_s,
        "ingest_cpu_s": ingest_cpu,
        "model_s": model_s,
        "model_s_before_after": [before_s[0], after_s[0]],
        "model_cpu_s": model_cpu,
        "model_chunks_per_s": n / model_s,
        "pipeline_overhead": ingest_s / model_s - 1,
        "pipeline_overhead_cpu": ingest_cpu / model_cpu - 1,
        "pipeline_outside_embedding_s": ingest_s - first.embed_seconds,
        "reingest_unchanged_s": reingest_s,
        "reingest_unchanged_fraction": reingest_s / ingest_s,
        "reingest_unchanged_embedded": again.chunks_embedded,
        "reingest_one_edit_s": changed_s,
        "reingest_one_edit_embedded": changed.chunks_embedded,
        "reingest_one_edit_kept": changed.chunks_kept,
        "hybrid_search": percentiles(latencies[len(questions) :]),  # the first round warms caches
    }
    return result, vectors


def synthetic(real: np.ndarray, n: int, seed: int) -> np.ndarray:
    """`n` unit vectors clustered like `real`: a real vector moved towards two of its neighbours, plus noise."""
    rng = np.random.default_rng(seed)
    sims = real @ real.T
    neighbours = np.argsort(-sims, axis=1)[:, 1:11]
    out = np.empty((n, real.shape[1]), np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        c = rng.integers(0, len(real), m)
        j1, j2 = neighbours[c, rng.integers(0, 10, m)], neighbours[c, rng.integers(0, 10, m)]
        w1 = rng.uniform(0, 0.5, (m, 1)).astype(np.float32)
        w2 = rng.uniform(0, 0.5, (m, 1)).astype(np.float32)
        noise = rng.normal(0, 0.02, (m, real.shape[1])).astype(np.float32)
        v = real[c] + w1 * (real[j1] - real[c]) + w2 * (real[j2] - real[c]) + noise
        out[start : start + m] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def timed_queries(fn, queries: np.ndarray, truth: np.ndarray) -> dict:
    ms, recalls = [], []
    for q, t in zip(queries, truth, strict=True):
        t0 = time.perf_counter()
        ids = fn(q)
        ms.append((time.perf_counter() - t0) * 1000)
        recalls.append(len(set(map(int, ids[:10])) & set(map(int, t))) / 10)
    return percentiles(ms) | {"recall_at_10": float(np.mean(recalls))}


def vector_index(real: np.ndarray, n: int, work: Path, efs: tuple[int, ...]) -> dict:
    from fmstack.app.rag import index as ix

    data = synthetic(real, n, seed=0)
    queries = synthetic(real, 200, seed=1)
    truth = np.vstack([np.argsort(-(data @ q))[:10] for q in queries])
    out: dict = {"n": n}
    out["numpy_exact"] = timed_queries(lambda q: np.argpartition(-(data @ q), 10)[:10], queries, truth)
    t0 = time.perf_counter()
    index = ix.VectorIndex(real.shape[1], capacity=n)
    index.add(np.arange(n, dtype=np.int64), data)
    out["build_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    index.save(work / f"index-{n}", 1)
    out["save_s"] = time.perf_counter() - t0
    out["file_mb"] = (work / f"index-{n}" / "index-1.hnsw").stat().st_size / 1e6
    del index
    t0 = time.perf_counter()
    index = ix.VectorIndex.load(work / f"index-{n}", real.shape[1])
    out["load_s"] = time.perf_counter() - t0
    index._index.set_num_threads(1)
    out["hnswlib"] = {}
    for ef in efs:
        out["hnswlib"][f"ef{ef}"] = timed_queries(lambda q, ef=ef: index.search(q, 10, ef=ef)[0], queries, truth)
    # Deleting 1 % and adding it back (an incremental update), then searching again at the default ef.
    gone = np.arange(0, n, 100, dtype=np.int64)
    t0 = time.perf_counter()
    index.remove(gone)
    index.add(gone + n, data[gone])
    out["update_1pct_s"] = time.perf_counter() - t0
    remap = np.arange(n, dtype=np.int64)
    remap[gone] = gone + n
    truth2 = remap[truth]
    out["hnswlib_after_update"] = timed_queries(lambda q: index.search(q, 10)[0], queries, truth2)
    return out


def candidates(real: np.ndarray, n: int) -> list[dict]:
    """Other libraries at `n` vectors, each at its usual settings (how hnswlib was chosen)."""
    data = synthetic(real, n, seed=0)
    queries = synthetic(real, 200, seed=1)
    truth = np.vstack([np.argsort(-(data @ q))[:10] for q in queries])
    rows = []

    def add(name: str, build_s: float, fn) -> None:
        rows.append({"name": name, "build_s": build_s} | timed_queries(fn, queries, truth))
        print(json.dumps(rows[-1]), file=sys.stderr)

    from usearch.index import Index

    for dtype in ("f32", "f16", "i8"):
        t0 = time.perf_counter()
        u = Index(ndim=data.shape[1], metric="cos", dtype=dtype, connectivity=16, expansion_add=128)
        u.add(np.arange(n), data, threads=2)
        build = time.perf_counter() - t0
        for ef in (32, 64, 128):
            u.expansion_search = ef
            add(f"usearch {dtype} M16 ef{ef}", build, lambda q, u=u: u.search(q, 10, threads=1).keys)
    import faiss

    faiss.omp_set_num_threads(2)
    t0 = time.perf_counter()
    f = faiss.IndexHNSWFlat(data.shape[1], 16, faiss.METRIC_INNER_PRODUCT)
    f.hnsw.efConstruction = 128
    f.add(data)
    build = time.perf_counter() - t0
    faiss.omp_set_num_threads(1)
    for ef in (32, 64, 128):
        f.hnsw.efSearch = ef
        add(f"faiss HNSWFlat M16 ef{ef}", build, lambda q, f=f: f.search(q[None], 10)[1][0])
    faiss.omp_set_num_threads(2)
    nlist = int(4 * np.sqrt(n))
    t0 = time.perf_counter()
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(data.shape[1]), data.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.train(data[np.random.default_rng(0).choice(n, min(n, 50 * nlist), replace=False)])
    ivf.add(data)
    build = time.perf_counter() - t0
    faiss.omp_set_num_threads(1)
    for nprobe in (8, 16, 32):
        ivf.nprobe = nprobe
        add(f"faiss IVFFlat nlist{nlist} nprobe{nprobe}", build, lambda q, i=ivf: i.search(q[None], 10)[1][0])
    try:  # Python's own sqlite3 here cannot load extensions; apsw can
        import apsw
        import sqlite_vec

        db = apsw.Connection(":memory:")
        db.enable_load_extension(True)
        db.load_extension(sqlite_vec.loadable_path())
        t0 = time.perf_counter()
        db.execute(f"create virtual table v using vec0(embedding float[{data.shape[1]}] distance_metric=cosine)")
        with db:
            db.executemany("insert into v(rowid, embedding) values(?, ?)", ((i, data[i].tobytes()) for i in range(n)))
        build = time.perf_counter() - t0
        sql = "select rowid from v where embedding match ? and k = 10"
        add("sqlite-vec vec0 (exact scan)", build, lambda q: [r[0] for r in db.execute(sql, (q.tobytes(),))])
    except ImportError as exc:
        print(f"sqlite-vec skipped: {exc}", file=sys.stderr)
    return rows


# ---------------------------------------------------------------------------------------------- retrieval quality

SECTIONS = ("speed", "modes", "contextual", "rerank", "hyde", "refusal", "tune")  # --only: rows of the quality run
STDLIB_QUESTIONS = HERE.parent / "examples" / "rag" / "stdlib_questions.yaml"
WIKI_DISTRACTORS = 10  # articles without a question, beside the 30 that have one


def _corpora(work: Path) -> dict[str, tuple[Path, Path]]:
    """{name: (folder, question set)}: the Wikipedia example (the 30 question articles + distractors) and stdlib."""
    import yaml

    sys.path.insert(0, str(HERE.parent / "examples" / "rag"))
    from make_stdlib_corpus import write_stdlib_corpus

    from fmstack.app.rag.corpus import wiki_articles, write_wiki_corpus

    titles = sorted({q["title"] for q in yaml.safe_load(QUESTIONS.read_text())["questions"] if q.get("title")})
    others = [t for t in sorted(wiki_articles()) if t not in titles][:WIKI_DISTRACTORS]
    write_wiki_corpus(work / "wiki", titles + others)
    write_stdlib_corpus(work / "stdlib")
    return {"stdlib": (work / "stdlib", STDLIB_QUESTIONS), "wiki": (work / "wiki", QUESTIONS)}


def _scores(result) -> dict:
    return {
        "recall": result.recall,
        "mrr": round(result.mrr, 4),
        "threshold": result.threshold,
        "answered_when_answerable": result.answered_when_answerable,
        "idk_when_unanswerable": result.idk_when_unanswerable,
    }


def _timed_eval(rag, name: str, questions, **options) -> dict:
    from fmstack.app.rag.evaluate import evaluate

    ms = []
    t0 = time.perf_counter()
    result = evaluate(rag, name, questions, **options)
    total = time.perf_counter() - t0
    for q in questions[:10]:  # a repeated question: the chat model's prompts come from the prefix cache
        t1 = time.perf_counter()
        rag.search(name, q.question, top_k=10, **{k: v for k, v in options.items() if k != "mode"})
        ms.append((time.perf_counter() - t1) * 1000)
    per_question = total / len(questions) * 1000  # first sight of each question: what a new question costs
    return _scores(result) | {"latency": percentiles(ms), "eval_s": total, "per_question_ms": per_question}


def _embedding_speed(rag, name: str, n: int = 256, rounds: int = 2) -> dict:
    """Chunks/s of both backends on the same `n` chunk texts of collection `name`, in alternating rounds (the machine
    is shared: wall time counts what others took, CPU time does not), the best round of each."""
    from sqlalchemy import select

    from fmstack.app.rag.embedders import EmbedderSpec
    from fmstack.app.rag.versions import embed_text
    from fmstack.core.store.schema import RagChunk

    cid = rag.collection(name).id
    with rag.sessions() as s:
        rows = s.execute(select(RagChunk.heading, RagChunk.text).where(RagChunk.collection_id == cid).limit(n)).all()
    texts = [embed_text(h, t) for h, t in rows]
    backends = {b: rag.embedder(EmbedderSpec(rag.embedding_model, b)) for b in ("sentence-transformers", "onnx-int8")}
    best: dict = {}
    for _ in range(rounds):
        for backend, embed in backends.items():
            embed(texts[:8])  # warm
            wall, cpu = time.perf_counter(), time.process_time()
            embed(texts)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            prior = best.get(backend, {"wall_chunks_per_s": 0.0, "cpu_chunks_per_s": 0.0})
            best[backend] = {"wall_chunks_per_s": max(prior["wall_chunks_per_s"], len(texts) / wall),
                             "cpu_chunks_per_s": max(prior["cpu_chunks_per_s"], len(texts) / cpu)}  # fmt: skip
    st, onnx = best["sentence-transformers"], best["onnx-int8"]
    return best | {
        "chunks": len(texts),
        "speedup_wall": onnx["wall_chunks_per_s"] / st["wall_chunks_per_s"],
        "speedup_cpu": onnx["cpu_chunks_per_s"] / st["cpu_chunks_per_s"],
        "load_average": os.getloadavg(),
    }


def _contextual_changes(rag, folder: Path, config) -> int:
    """How many chunks `--contextual` changes: none where the loader's heading path already starts with the title
    (a text file's name, a Markdown H1, a PDF's title)."""
    from dataclasses import replace

    from fmstack.app.rag.chunking import chunk_document
    from fmstack.app.rag.loaders import parse_file

    changed = 0
    for path in sorted(folder.iterdir()):
        parsed = parse_file(path, path.read_bytes())
        plain = chunk_document(parsed, config, rag.tokenizer())
        contextual = chunk_document(parsed, replace(config, contextual=True), rag.tokenizer())
        changed += sum(a.embed_text != b.embed_text for a, b in zip(plain, contextual, strict=True))
    return changed


def quality(
    work: Path,
    chat_model: str,
    writer_model: str,
    samples: int,
    out: Path,
    result: dict,
    corpora: list[str],
    rerank_questions: int,
    sections: tuple[str, ...] = SECTIONS,
) -> dict:
    """Every option on both corpora: retrieval modes, contextual chunks, the int8 ONNX backend (chunks/s and recall),
    LLM and cross-encoder reranking (MRR, latency), query expansion (HyDE), calibration and tuning, against
    hand-written question sets."""
    os.environ["FMSTACK_HOME"] = str(work / "home-quality")
    from fmstack.app.rag import ChunkConfig, Rag
    from fmstack.app.rag.evaluate import load_questions
    from fmstack.app.rag.tune import TuneOptions, tune
    from fmstack.core.config import get_settings
    from fmstack.gateway import Gateway

    settings = get_settings()
    gateway = Gateway.open(settings)
    rag = Rag(gateway.sessions, settings, gateway.pool, gateway)
    section = result.setdefault("quality", {"chat_model": chat_model, "writer_model": writer_model})

    def save(corpus: str, key: str, value) -> None:
        section.setdefault(corpus, {})[key] = value
        print(f"{corpus} {key}: {json.dumps(value)}", file=sys.stderr)
        out.write_text(json.dumps(result, indent=2))

    for corpus, (folder, qpath) in _corpora(work).items():
        if corpus not in corpora:
            continue
        questions = load_questions(qpath)
        config = ChunkConfig(chunk_tokens=200, overlap=40) if corpus == "wiki" else ChunkConfig(160, 0, "structure")
        st = rag.ingest(folder, corpus, config)
        if "speed" in sections:
            onnx = rag.ingest(folder, f"{corpus}-onnx", config, backend="onnx-int8")
            save(corpus, "ingest", {
                "documents": st.files, "chunks": st.chunks_total,
                "sentence_transformers_chunks_per_s": st.chunks_embedded / st.embed_seconds,
                "onnx_int8_chunks_per_s": onnx.chunks_embedded / onnx.embed_seconds,
                "speedup": (onnx.chunks_embedded / onnx.embed_seconds) / (st.chunks_embedded / st.embed_seconds),
            })  # fmt: skip
            save(corpus, "embedding_speed", _embedding_speed(rag, corpus))
            save(corpus, "hybrid+onnx-int8", _timed_eval(rag, f"{corpus}-onnx", questions))
        if "modes" in sections:
            for mode in ("keyword", "vector", "hybrid"):
                save(corpus, mode, _timed_eval(rag, corpus, questions, mode=mode))
        if "contextual" in sections:
            changed = _contextual_changes(rag, folder, config)
            save(corpus, "contextual_chunks_changed", changed)
            if changed:  # a collection of contextual chunks, where they differ from the plain ones
                rag.ingest(folder, f"{corpus}-ctx", ChunkConfig(config.chunk_tokens, config.overlap, config.by, True))
                save(corpus, "hybrid+contextual", _timed_eval(rag, f"{corpus}-ctx", questions))
        if "rerank" in sections and rerank_questions:  # 20 chat-model calls a question: a sample
            sample = [q for q in questions if q.answerable][:rerank_questions]
            save(corpus, f"hybrid+llm rerank ({chat_model}, {len(sample)} questions)",
                 _timed_eval(rag, corpus, sample, rerank="llm", rerank_model=chat_model))  # fmt: skip
            save(corpus, f"hybrid, the same {len(sample)} questions", _timed_eval(rag, corpus, sample))
        for model in dict.fromkeys((writer_model, chat_model)) if "hyde" in sections else ():  # query expansion
            expanded = _timed_eval(rag, corpus, questions, expand="hyde", expand_model=model)
            save(corpus, f"hybrid+hyde ({model})", expanded)
        if "refusal" in sections:  # calibrate and tune change the collection: last
            _refusal(rag, gateway, corpus, writer_model, questions, out, save)
        if "tune" not in sections:
            continue
        report = tune(rag, gateway, corpus, writer_model, TuneOptions(samples=samples, cross_encoder=True), questions)
        save(corpus, "tune", report.as_dict())
        save(corpus, "hybrid, tuned" if report.switched else "hybrid, tuned (rejected, not switched)",
             _timed_eval(rag, corpus, questions))  # fmt: skip
        save(corpus, "hybrid+cross-encoder", _timed_eval(rag, corpus, questions, rerank="cross-encoder"))
    gateway.close()
    return section


def _refusal(rag, gateway, corpus: str, writer_model: str, questions, out: Path, save) -> None:
    """The "I don't know" gate calibrated on the collection (the writer's questions and off-topic ones), on the
    question's similarity and on the hypothetical answer's (expand hyde), each measured on the hand-written set."""
    from fmstack.app.rag.calibrate import calibrate

    for expand, suffix in (("none", ""), ("hyde", " (hyde)")):
        t0 = time.perf_counter()
        plot = out.parent / f"rag-calibration-{corpus}{'-hyde' if expand == 'hyde' else ''}.png"
        cal = calibrate(rag, gateway, corpus, writer_model, samples=40, plot=plot, expand=expand,
                        expand_model=writer_model)  # fmt: skip
        save(corpus, f"calibration{suffix}", {k: v for k, v in cal.as_dict().items() if k not in ("curve", "questions")}
             | {"seconds": time.perf_counter() - t0})  # fmt: skip
        label = f"hybrid+hyde ({writer_model}), calibrated threshold (hyde)" if expand == "hyde" else \
            "hybrid, calibrated threshold"  # fmt: skip
        save(corpus, label, _timed_eval(rag, corpus, questions, expand=expand, expand_model=writer_model))


def machine_info(args: argparse.Namespace) -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    return {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu,
        "load_average_at_start": os.getloadavg(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "hnswlib": importlib.metadata.version("hnswlib"),
        "sentence_transformers": importlib.metadata.version("sentence-transformers"),
        "quick": args.quick,
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ing = result["ingestion"]
    ax = axes[0]
    ax.bar(["embedding model alone", "fmstack rag ingest"], [ing["model_chunks_per_s"], ing["ingest_chunks_per_s"]])
    ax.set_ylabel("chunks / s")
    ax.set_title(f"Ingestion, {ing['chunks']} chunks (overhead {ing['pipeline_overhead']:+.1%})")
    ax = axes[1]
    labels, p95, recall = [], [], []
    for v in result["vector_index"]:
        n = f"{v['n'] // 1000:,}k"
        labels.append(f"exact\n{n}")
        p95.append(v["numpy_exact"]["p95_ms"])
        recall.append(1.0)
        for ef, r in v["hnswlib"].items():
            labels.append(f"{ef}\n{n}")
            p95.append(r["p95_ms"])
            recall.append(r["recall_at_10"])
    ax.bar(range(len(labels)), p95, color=["#999" if lab.startswith("exact") else "#2f5bd3" for lab in labels])
    ax.axhline(20, color="red", linestyle="--", label="goal: p95 ≤ 20 ms")
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("p95 latency, ms (log)")
    ax.set_title("Vector search, one query, k = 10 (grey: exact NumPy, blue: HNSW)")
    ax.legend()
    ax = axes[2]
    ax.bar(range(len(labels)), recall, color="#1a7f47")
    ax.axhline(0.95, color="red", linestyle="--", label="goal: recall@10 ≥ 0.95")
    ax.set_ylim(0.8, 1.01)
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_title("Recall@10 against exact search")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="10 articles and 20k vectors: a smoke run")
    p.add_argument("--candidates", action="store_true", help="also measure usearch, faiss and sqlite-vec at 100k")
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--quality", action="store_true", help="only the retrieval-quality section, on both corpora")
    p.add_argument("--chat-model", default="smollm2-135m-instruct", help="the LLM reranker (--quality)")
    p.add_argument("--writer-model", default="qwen2.5-0.5b-instruct", help="writes calibrate/tune questions")
    p.add_argument("--samples", type=int, default=120, help="chunks `tune` writes questions about (--quality)")
    p.add_argument("--corpora", default="stdlib,wiki", help="which corpora (--quality)")
    p.add_argument("--rerank-questions", type=int, default=12, help="questions the LLM reranker is measured on")
    p.add_argument("--only", default=",".join(SECTIONS), help="--quality: these rows, merged into the last results")
    args = p.parse_args()
    result: dict = {"machine": machine_info(args)}
    if args.quality:
        args.out.mkdir(parents=True, exist_ok=True)
        sections = tuple(s for s in SECTIONS if s in args.only.split(","))
        out = args.out / f"rag-quality-{args.corpora.replace(',', '-')}.json"
        if sections != SECTIONS and out.exists():  # a partial run updates those rows of the last whole one
            machine, result = result["machine"], json.loads(out.read_text())
            result["quality"].setdefault("partial_runs", []).append(machine | {"sections": list(sections)})
        with tempfile.TemporaryDirectory(prefix="fmstack-rag-quality-") as tmp:
            corpora = args.corpora.split(",")
            quality(Path(tmp), args.chat_model, args.writer_model, args.samples, out, result, corpora,
                    args.rerank_questions, sections)  # fmt: skip
        return
    with tempfile.TemporaryDirectory(prefix="fmstack-rag-bench-") as tmp:
        work = Path(tmp)
        print("ingestion…", file=sys.stderr)
        result["ingestion"], real = ingestion(work, args.quick)
        print(json.dumps(result["ingestion"], indent=1), file=sys.stderr)
        sizes = (20_000,) if args.quick else (100_000, 1_000_000)
        result["vector_index"] = []
        for n in sizes:
            print(f"vector index at {n:,}…", file=sys.stderr)
            result["vector_index"].append(vector_index(real, n, work, (32, 64, 128)))
            print(json.dumps(result["vector_index"][-1], indent=1), file=sys.stderr)
        if args.candidates:
            result["candidates"] = {"n": 20_000 if args.quick else 100_000}
            result["candidates"]["rows"] = candidates(real, result["candidates"]["n"])
    args.out.mkdir(parents=True, exist_ok=True)
    name = "rag-quick" if args.quick else "rag"
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2))
    plot(result, args.out / f"{name}.png")
    ing = result["ingestion"]
    print(f"\n{'':34}{'value':>14}  goal")
    print(f"{'ingestion, chunks/s':34}{ing['ingest_chunks_per_s']:>14.1f}")
    print(f"{'embedding model alone, chunks/s':34}{ing['model_chunks_per_s']:>14.1f}")
    print(f"{'pipeline overhead (wall)':34}{ing['pipeline_overhead']:>14.1%}  ≤ 10 %")
    print(f"{'pipeline overhead (CPU time)':34}{ing['pipeline_overhead_cpu']:>14.1%}  ≤ 10 %")
    print(f"{'re-ingest unchanged / first':34}{ing['reingest_unchanged_fraction']:>14.2%}  ≤ 2 %")
    print(f"{'re-ingest one edit: embedded':34}{ing['reingest_one_edit_embedded']:>14}")
    search = ing["hybrid_search"]
    print(f"{'hybrid search p50 / p95, ms':34}{search['p50_ms']:>7.1f} /{search['p95_ms']:>5.1f}")
    for v in result["vector_index"]:
        print(f"{'exact NumPy @ ' + format(v['n'], ','):34}{v['numpy_exact']['p95_ms']:>11.2f} ms p95")
        for ef, r in v["hnswlib"].items():
            label = f"HNSW {ef} @ {v['n']:,}"
            print(f"{label:34}{r['p95_ms']:>11.2f} ms p95, recall@10 {r['recall_at_10']:.3f}  ≤ 20 ms, ≥ 0.95")
    print(f"wrote {args.out / (name + '.json')} and {name}.png")


if __name__ == "__main__":
    main()
