"""Two revisions of fmstack side by side, in one run: did a change make serving or evaluation slower?

A restructuring (issue 14: layers, one traced path) must not cost speed. This runs the same work against a git
revision checked out beside the tree (`git worktree`, default the last commit before the layers) and against the
working tree, alternating them round by round so a machine that slows down mid-run hurts both alike:

1. serve: `fmstack up --model M` in a fresh home; one streamed request after another (8 prompts × 128 greedy
   tokens: time to first token, decode tok/s after it), then the same 8 at once (aggregate tok/s);
2. eval: `fmstack eval run SUITE -m M` in a fresh home (empty cache): wall time (model load included) and cases/s,
   on 40 arithmetic questions with deterministic metrics (as in benchmarks/eval.py) unless `--suite` names one.

Both sides are started as subprocesses with `PYTHONPATH` pointing at their own `src/`, on the same interpreter and
packages, so only fmstack's code differs. The verdict compares medians over rounds; on 2 cores, differences under
~5 % are noise.

    .venv/bin/python benchmarks/revisions.py                         # db99c94 (before the layers) vs the tree
    .venv/bin/python benchmarks/revisions.py --before HEAD~3 --rounds 3

Writes results/revisions.json and results/revisions.png.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import yaml
from _serving import free_port, http_stream_fn, run_batch, server
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BEFORE_LAYERS = "db99c94"  # the last commit before issue 14's restructuring
PROMPTS = [
    "Explain how a refrigerator keeps food cold.",
    "Write a short story about a lighthouse keeper.",
    "List the planets of the solar system and one fact about each.",
    "Describe how to bake bread at home, step by step.",
    "What are the main causes of the French Revolution?",
    "Give advice to someone starting to learn the guitar.",
    "Explain what a hash table is and why it is fast.",
    "Describe a walk through a forest in autumn.",
]
console = Console(stderr=True)


def checkout(rev: str) -> Path:
    """A detached worktree of `rev` under the temp dir, reused across runs."""
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", rev], capture_output=True, text=True,
                         check=True).stdout.strip()  # fmt: skip
    path = Path(tempfile.gettempdir()) / f"fmstack-rev-{sha}"
    if not (path / "src" / "fmstack").is_dir():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(path), sha], check=True,
                       capture_output=True)  # fmt: skip
    return path


def env_for(tree: Path, home: Path) -> dict[str, str]:
    return os.environ | {"PYTHONPATH": str(tree / "src"), "FMSTACK_HOME": str(home)}


@contextlib.contextmanager
def fmstack_server(tree: Path, model: str) -> Iterator[str]:
    """`fmstack up` from `tree` in a fresh home; its base URL while it runs."""
    with tempfile.TemporaryDirectory(prefix="fmstack-rev-home-") as home:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "fmstack", "up", "--model", model, "--port", str(port)]
        log = Path(home) / "server.log"
        with server(f"fmstack at {tree.name}", command, env_for(tree, Path(home)), base, "/v1/models", log, tree):
            yield base


async def serve_load(base: str, model: str, max_tokens: int) -> dict:
    requests = [(i, [{"role": "user", "content": p}]) for i, p in enumerate(PROMPTS)]
    async with httpx.AsyncClient(timeout=600) as client:
        stream = http_stream_fn(client, base, model, max_tokens, {})
        await run_batch(http_stream_fn(client, base, model, 8, {}), requests[:1], 1)  # warm-up: caches touched
        single = await run_batch(stream, requests, 1)
        together = await run_batch(stream, requests, len(requests))
    if failures := single.failures + together.failures:
        raise RuntimeError(f"{failures} requests failed: {single.summary()['errors'] + together.summary()['errors']}")
    return {
        "decode_tps_1_stream": single.decode_tps(),
        "ttft_p50_1_stream_s": single.ttft(50),
        "aggregate_tps_8_streams": together.aggregate_tps,
        "ttft_p50_8_streams_s": together.ttft(50),
    }


def eval_run(tree: Path, model: str, suite: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="fmstack-rev-eval-") as home:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "fmstack", "eval", "run", str(suite), "-m", model],
                              env=env_for(tree, Path(home)), cwd=tree, capture_output=True, text=True)  # fmt: skip
        seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):  # 1: a threshold failed, the run itself is fine
        raise RuntimeError(f"eval run in {tree} failed: {done.stderr[-2000:]}")
    cases = len(yaml.safe_load(suite.read_text())["cases"])
    return {"eval_s": seconds, "eval_cases_per_s": cases / seconds if cases else None}


def arithmetic_suite(path: Path, n: int = 40) -> Path:
    """n questions with one right number each: the harness's own cost around a fast model."""
    cases = [{"id": f"q{i}", "vars": {"a": 11 + i, "b": 7 + 3 * i}, "reference": str(18 + 4 * i)} for i in range(n)]
    prompt = "What is {{ a }} + {{ b }}? Answer with the number only."
    params = {"temperature": 0, "max_tokens": 16}
    suite = {"name": "arithmetic", "prompt": prompt, "params": params, "metrics": ["contains"], "cases": cases}
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


def measure(tree: Path, args: argparse.Namespace) -> dict:
    with fmstack_server(tree, args.model) as base:
        out = asyncio.run(serve_load(base, args.model, args.max_tokens))
    return out | eval_run(tree, args.model, args.suite)


HIGHER_IS_BETTER = {"decode_tps_1_stream": True, "ttft_p50_1_stream_s": False, "aggregate_tps_8_streams": True,
                    "ttft_p50_8_streams_s": False, "eval_s": False, "eval_cases_per_s": True}  # fmt: skip


def summarize(rounds: dict[str, list[dict]]) -> dict:
    med = {side: {k: statistics.median(r[k] for r in rs if r.get(k) is not None) for k in HIGHER_IS_BETTER
                  if any(r.get(k) is not None for r in rs)} for side, rs in rounds.items()}  # fmt: skip
    ratios = {k: med["after"][k] / med["before"][k] for k in med["after"] if med["before"].get(k)}
    slower = [k for k, r in ratios.items() if (r < 0.95 if HIGHER_IS_BETTER[k] else r > 1.05)]
    return {"median": med, "after_over_before": ratios, "slower_by_over_5_percent": slower}


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ratios = summary["after_over_before"]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    names = list(ratios)
    colors = ["tab:green" if (ratios[n] >= 0.95 if HIGHER_IS_BETTER[n] else ratios[n] <= 1.05) else "tab:red"
              for n in names]  # fmt: skip
    ax.barh(names, [ratios[n] for n in names], color=colors)
    ax.axvline(1.0, color="black", lw=1)
    ax.set_xlabel("after / before (time: lower is better; tok/s and cases/s: higher is better)")
    ax.set_title("fmstack before and after, same machine, one run")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--before", default=BEFORE_LAYERS, help=f"git revision to compare with (default {BEFORE_LAYERS})")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--suite", type=Path, help="eval suite (default: 40 generated arithmetic questions)")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fmstack-rev-"))
    args.suite = args.suite.resolve() if args.suite else arithmetic_suite(work / "arithmetic.yaml")
    trees = {"before": checkout(args.before), "after": ROOT}
    rounds: dict[str, list[dict]] = {"before": [], "after": []}
    for i in range(args.rounds):
        for side in ("before", "after") if i % 2 == 0 else ("after", "before"):
            console.log(f"round {i + 1}/{args.rounds}: {side} ({trees[side]})")
            rounds[side].append(measure(trees[side], args))
            console.log(rounds[side][-1])
    summary = summarize(rounds)
    table = Table(title=f"{args.model}: {args.before} (before) vs the working tree (after), medians")
    for col in ("figure", "before", "after", "after/before"):
        table.add_column(col)
    for k, r in summary["after_over_before"].items():
        table.add_row(k, f"{summary['median']['before'][k]:.3g}", f"{summary['median']['after'][k]:.3g}", f"{r:.2f}")
    Console().print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    record = {
        "machine": {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "cpu_count": os.cpu_count(),
                    "load_average_at_end": os.getloadavg(), "platform": platform.platform()},  # fmt: skip
        "before": args.before, "after": f"working tree at {head.stdout.strip()}", "model": args.model,
        "suite": args.suite.name, "rounds": rounds, **summary,
    }  # fmt: skip
    (args.out / "revisions.json").write_text(json.dumps(record, indent=1))
    plot(summary, args.out / "revisions.png")
    console.log(f"wrote {args.out / 'revisions.json'} and revisions.png")


if __name__ == "__main__":
    main()
