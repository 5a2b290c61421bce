"""Bounded memory: the data pipeline's peak memory as its input grows from megabytes to gigabytes.

Issue 4 asks that a 10 GB JSONL go through in constant memory. This script writes JSONL corpora of growing size
(documents of 8–20 random sentences from gensim's packaged news articles and novel, so every document is new
and the near-duplicate search has real work), runs `fmstack data run` on each (MinHash dedup, `--clean` to clean
first; Parquet out; every core), and samples the memory of the command and its workers: anonymous memory (what the
run itself holds) summed over the processes, and the largest resident size, which also counts pages of the
memory-mapped files that the kernel can drop and reread.
Reading, cleaning and writing stream shard by shard; what grows with the input is dedup's state — signatures are
memory-mapped on disk, and RAM holds a few bytes per document (exact hashes, component labels, candidate pairs).

    .venv/bin/python benchmarks/data_scale.py                  # 0.1, 0.3 and 1 GB
    .venv/bin/python benchmarks/data_scale.py --gb 10           # the issue's 10 GB (18 minutes on 2 idle cores)

Writes results/data_scale.json and results/data_scale.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PIPELINE = """
input: {{paths: [{src}], text_field: text, id_field: id}}
output: {{path: {out}, format: parquet}}
dedup: {{threshold: 0.7, ngram: 3}}
"""
CLEAN = "clean: {min_words: 20}\n"


def sentences() -> list[str]:
    """Every sentence of gensim's packaged Lee news articles and its Crime and Punishment text."""
    from gensim.test.utils import datapath

    pool = []
    for name in ("lee_background.cor", "lee.cor", "crime-and-punishment.txt"):
        text = Path(datapath(name)).read_text(encoding="utf-8", errors="replace")
        pool += [s.strip() + "." for s in text.replace("\n", " ").split(". ") if len(s.split()) >= 5]
    return pool


def write_corpus(path: Path, gigabytes: float, pool: list[str], seed: int = 0) -> int:
    """Documents until the file holds `gigabytes`; returns how many."""
    rng = random.Random(seed)
    target, size, n = gigabytes * 1e9, 0, 0
    with path.open("w", encoding="utf-8") as f:
        while size < target:
            line = json.dumps({"id": n, "text": " ".join(rng.choices(pool, k=rng.randint(8, 20)))}) + "\n"
            f.write(line)
            size += len(line)
            n += 1
    return n


def run(src: Path, work: Path, clean: bool) -> dict[str, Any]:
    """`fmstack data run`, its process tree's memory sampled every 50 ms from /proc."""
    spec = work / "pipeline.yaml"
    spec.write_text(PIPELINE.format(src=src, out=work / "out") + (CLEAN if clean else ""))
    cmd = [sys.executable, "-m", "fmstack", "data", "run", str(spec), "--force"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    peak = {"anon_mb": 0.0, "largest_rss_mb": 0.0}
    while proc.poll() is None:
        tree = [_memory(pid) for pid in _descendants(proc.pid)]
        tree = [m for m in tree if m]
        peak["anon_mb"] = max(peak["anon_mb"], sum(m["RssAnon"] for m in tree) / 1024)
        peak["largest_rss_mb"] = max([peak["largest_rss_mb"]] + [m["VmRSS"] / 1024 for m in tree])
        time.sleep(0.05)
    seconds = time.perf_counter() - t0
    if proc.returncode not in (0, 1):  # 1: some documents were rejected, which is normal
        raise SystemExit(f"fmstack data run failed with exit code {proc.returncode}")
    return {"seconds": seconds, **peak}


def _descendants(root: int) -> list[int]:
    """The process and all its children, grandchildren… (the pipeline's worker pool)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    tree, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        tree += frontier
    return tree


def _memory(pid: int) -> dict[str, int] | None:
    """VmRSS (all resident pages), RssAnon (the process's own memory) and RssFile (mapped files, which the
    kernel can drop and reread: the memory-mapped signatures and band hashes) in KB."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    wanted = ("VmRSS", "RssAnon", "RssFile")
    return {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in lines) if k in wanted}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gb", type=float, action="append", help="input sizes in GB (repeatable)")
    p.add_argument("--clean", action="store_true", help="clean too (about 5x slower: language id, Gopher rules)")
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args()
    sizes = args.gb or [0.1, 0.3, 1.0]
    from rich.console import Console
    from rich.table import Table

    console, pool, rows = Console(), sentences(), []
    for gb in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "corpus.jsonl"
            with console.status(f"writing {gb} GB of JSONL"):
                docs = write_corpus(src, gb, pool)
            with console.status(f"fmstack data run on {gb} GB ({docs:,} documents)"):
                r = run(src, Path(tmp), args.clean)
            rows.append({"gigabytes": gb, "documents": docs, **r, "date": time.strftime("%Y-%m-%d")})
            console.print(f"{gb} GB: {r['seconds']:.0f} s, anonymous memory {r['anon_mb']:.0f} MB")
    steps = "clean + dedup" if args.clean else "dedup"
    rows = _merge(args.out / "data_scale.json", steps, rows)
    table = Table(title=f"fmstack data run ({steps}) as the input grows")
    for col in ("input GB", "documents", "seconds", "MB/s", "peak anon MB (all processes)", "largest RSS MB"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            f"{r['gigabytes']:g}",
            f"{r['documents']:,}",
            f"{r['seconds']:.0f}",
            f"{r['gigabytes'] * 1000 / r['seconds']:.1f}",
            f"{r['anon_mb']:.0f}",
            f"{r['largest_rss_mb']:.0f}",
        )
    console.print(table)
    summary = {
        "machine": {
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
        },
        "steps": steps,
        "runs": rows,
        "anon_growth": rows[-1]["anon_mb"] / rows[0]["anon_mb"],
        "input_growth": rows[-1]["gigabytes"] / rows[0]["gigabytes"],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "data_scale.json").write_text(json.dumps(summary, indent=1) + "\n")
    _plot(rows, args.out / "data_scale.png", steps)
    console.print(
        f"input x{summary['input_growth']:.0f} -> peak anonymous memory x{summary['anon_growth']:.2f}; "
        f"wrote {args.out / 'data_scale.json'} and {args.out / 'data_scale.png'}"
    )


def _merge(previous: Path, steps: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """This run's rows and the last results' rows for sizes not run now (same steps), by size: the 10 GB case
    can run alone and still be plotted beside the small ones."""
    kept = {}
    if previous.exists():
        old = json.loads(previous.read_text())
        if old.get("steps") == steps:
            kept = {r["gigabytes"]: r for r in old["runs"]}
    return sorted((kept | {r["gigabytes"]: r for r in rows}).values(), key=lambda r: r["gigabytes"])


def _plot(rows: list[dict[str, Any]], path: Path, steps: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    gb = [r["gigabytes"] for r in rows]
    left.plot(gb, [r["anon_mb"] for r in rows], "o-", color="#4c72b0", label="anonymous, all processes")
    left.plot(gb, [r["largest_rss_mb"] for r in rows], "s--", color="#c44e52", label="largest RSS (incl. mapped files)")
    left.set(xscale="log", xlabel="input (GB)", ylabel="MB", title="peak memory", ylim=(0, None))
    left.legend(fontsize=8)
    right.plot(gb, [r["gigabytes"] * 1000 / r["seconds"] for r in rows], "o-", color="#55a868")
    right.set(xscale="log", xlabel="input (GB)", ylabel="MB/s", title="throughput", ylim=(0, None))
    fig.suptitle(f"fmstack data run ({steps}), {os.cpu_count()} CPUs")
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
