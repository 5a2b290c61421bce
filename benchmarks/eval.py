"""Eval harness benchmark: cases per second for one suite, run serially, concurrently and again from the cache.

The suite is 40 generated arithmetic questions ("What is 17 + 25?") with deterministic metrics only, answered by
SmolLM2 with greedy decoding and short answers, so the numbers show what the harness itself costs around a fast
model: queueing, caching, scoring and storing every result. Configurations, one after the other:

1. fmstack Runner in-process (`LocalGenerator`), concurrency 1, empty cache: the baseline.
2. the same with concurrency 4 (the CLI's default), empty cache. fmstack's engine decodes one sequence at a time,
   so any gain comes from overlapping scoring and storing with generation, not from batching.
3. the same with concurrency 4 again, on the now warm cache: a re-run of an unchanged suite generates nothing.
4. a plain loop with the `openai` client against `fmstack up` (the peer: what a hand-written eval script gets).
5. fmstack Runner against the same server (`RemoteGenerator`, as `fmstack eval run --base-url`), concurrency 4.

Every cold configuration starts from an empty store. Each runs `--passes` times; the table shows the median.
All of them must produce the same answers (greedy decoding) and the same scores, and the run checks that they do.

Usage:
    .venv/bin/python benchmarks/eval.py            # full run, about three minutes on 2 cores
    .venv/bin/python benchmarks/eval.py --quick    # smoke run: 8 cases, one pass

Writes benchmarks/results/eval.json (every raw number, machine info) and benchmarks/results/eval.png.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

MODEL = "smollm2-135m-instruct"
RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CASES = 40
CONCURRENT = 4
MAX_TOKENS = 16

console = Console(stderr=True)


# --------------------------------------------------------------------------------------------------- the suite


def write_suite(directory: Path, n: int, seed: int = 0) -> Path:
    """A deterministic n-case suite: sums of two-digit numbers, answered with the number only."""
    rng = random.Random(seed)
    cases = []
    for i in range(n):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        cases.append({"id": f"sum-{i:02d}", "vars": {"a": a, "b": b}, "reference": str(a + b)})
    suite = {
        "name": f"bench-sums-{n}",
        "system": "You are a calculator. Reply with the number only.",
        "prompt": "What is {{ a }} + {{ b }}?",
        "params": {"temperature": 0, "max_tokens": MAX_TOKENS},
        "metrics": [{"name": "numeric", "threshold": 1}, "exact_match"],
        "cases": cases,
    }
    path = directory / "bench_suite.yaml"
    path.write_text(json.dumps(suite, indent=1))  # JSON is YAML: no dumper needed
    return path


# --------------------------------------------------------------------------------------------------- results


@dataclass
class Pass:
    """One run of the suite: wall time, and what it produced (to check every configuration agrees)."""

    wall_s: float
    cases: int
    cached: int
    errors: int
    outputs: dict[str, str]  # case id -> answer
    scores: dict[str, float] = field(default_factory=dict)  # metric -> mean

    @property
    def cases_per_s(self) -> float:
        return self.cases / self.wall_s if self.wall_s > 0 else 0.0


@dataclass
class ConfigResult:
    name: str
    kind: str  # "in-process", "server"
    concurrency: int
    cache: str  # "cold", "warm", "none"
    passes: list[Pass] = field(default_factory=list)
    error: str | None = None

    def median(self, attr: str) -> float | None:
        values = [getattr(p, attr) for p in self.passes]
        return statistics.median(values) if values else None

    def summary(self) -> dict:
        return {
            "cases_per_s_median": self.median("cases_per_s"),
            "wall_s_median": self.median("wall_s"),
            "cached": [p.cached for p in self.passes],
            "errors": [p.errors for p in self.passes],
            "scores": self.passes[0].scores if self.passes else None,
        }


def from_run(data, wall: float) -> Pass:
    """A Pass from the Runner's RunData."""
    scores: dict[str, list[float]] = {}
    for row in data.rows:
        for label, score in row.scores.items():
            if score.value is not None:
                scores.setdefault(label, []).append(score.value)
    return Pass(
        wall,
        len(data.rows),
        sum(r.cached for r in data.rows),
        sum(r.error is not None for r in data.rows),
        {r.case_id: r.output or "" for r in data.rows},
        {label: statistics.fmean(v) for label, v in scores.items()},
    )


# --------------------------------------------------------------------------------------------------- fmstack runs


def fresh_store(root: Path, name: str):
    """An empty store in its own directory, so a cold run finds nothing cached."""
    from fmstack.core.config import Settings
    from fmstack.core.store import open_store

    home = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root))
    return open_store(Settings(home=home))


async def run_suite(sessions, generator, suite, concurrency: int, use_cache: bool) -> Pass:
    from fmstack.app.eval.runner import Runner, RunOptions

    runner = Runner(sessions, generator)
    t0 = time.perf_counter()
    data = await runner.run(suite, RunOptions([MODEL], concurrency=concurrency, use_cache=use_cache))
    return from_run(data, time.perf_counter() - t0)


async def bench_in_process(suite, root: Path, passes: int, progress: Callable[[str], None]) -> list[ConfigResult]:
    """Configurations 1-3: one engine pool shared by all (the model loads once, outside the timings)."""
    from fmstack.app.eval.generate import LocalGenerator
    from fmstack.gateway import Gateway

    gateway = Gateway.open()
    generator = LocalGenerator(gateway)
    serial = ConfigResult("fmstack in-process, concurrency 1", "in-process", 1, "cold")
    concurrent = ConfigResult(f"fmstack in-process, concurrency {CONCURRENT}", "in-process", CONCURRENT, "cold")
    warm = ConfigResult(f"fmstack in-process re-run (cache), concurrency {CONCURRENT}", "in-process", CONCURRENT,
                        "warm")
    try:
        progress("in-process: loading the model and warming up")
        await generator.generate(MODEL, [{"role": "user", "content": "Say hi."}], {"max_tokens": 4})
        for p in range(passes):
            progress(f"in-process: concurrency 1, pass {p + 1}/{passes}")
            serial.passes.append(await run_suite(fresh_store(root, "serial"), generator, suite, 1, True))
            progress(f"in-process: concurrency {CONCURRENT}, pass {p + 1}/{passes}")
            sessions = fresh_store(root, "concurrent")
            concurrent.passes.append(await run_suite(sessions, generator, suite, CONCURRENT, True))
            progress(f"in-process: re-run from the cache, pass {p + 1}/{passes}")
            warm.passes.append(await run_suite(sessions, generator, suite, CONCURRENT, True))
    finally:
        gateway.close()
    return [serial, concurrent, warm]


# --------------------------------------------------------------------------------------------------- server runs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def fmstack_server(home: Path, log: Path, timeout: float = 300) -> Iterator[str]:
    """`fmstack up` with SmolLM2 in a temp home; always stopped, even on error or Ctrl-C."""
    port = free_port()
    env = os.environ | {"FMSTACK_HOME": str(home)}
    with log.open("w") as out:
        proc = subprocess.Popen([PYTHON, "-m", "fmstack", "up", "--model", MODEL, "--port", str(port)], env=env,
                                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"fmstack up exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"fmstack up did not become healthy within {timeout:.0f} s; see {log}")
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def plain_openai_loop(base: str, suite) -> Pass:
    """The peer: what a hand-written eval script does. One request per case, in order, then the same metrics."""
    import openai

    from fmstack.app.eval.metrics import MetricContext, Output

    client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="none")
    t0 = time.perf_counter()
    outputs, sums, errors = {}, {}, 0
    for case, metrics in suite.cases:
        try:
            r = await client.chat.completions.create(model=MODEL, messages=case.messages, temperature=0,
                                                     max_tokens=MAX_TOKENS)
            text = r.choices[0].message.content or ""
        except openai.APIError:
            errors += 1
            continue
        outputs[case.id] = text
        for m in metrics:
            score = m.score(case, Output(text, [text]), MetricContext())
            sums.setdefault(m.name, []).append(score.value)
    wall = time.perf_counter() - t0
    await client.close()
    return Pass(wall, len(suite.cases), 0, errors, outputs, {k: statistics.fmean(v) for k, v in sums.items()})


async def bench_server(suite, root: Path, passes: int, progress: Callable[[str], None]) -> list[ConfigResult]:
    """Configurations 4-5, against one `fmstack up` (the model loads once, before the timings)."""
    from fmstack.app.eval.generate import RemoteGenerator
    from fmstack.core.config import get_settings
    from fmstack.core.registry import Registry

    peer = ConfigResult("plain openai loop -> fmstack server", "server", 1, "none")
    remote = ConfigResult(f"fmstack Runner -> fmstack server, concurrency {CONCURRENT}", "server", CONCURRENT,
                          "cold")
    home = Path(tempfile.mkdtemp(prefix="server-", dir=root))
    progress("server: starting fmstack up")
    with fmstack_server(home, root / "server.log") as base:
        async with httpx.AsyncClient(timeout=120) as client:  # load the model outside the timings
            body = {"model": MODEL, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4}
            (await client.post(f"{base}/v1/chat/completions", json=body)).raise_for_status()
        generator = RemoteGenerator(f"{base}/v1", "none", Registry(get_settings()))
        for p in range(passes):
            progress(f"server: plain openai loop, pass {p + 1}/{passes}")
            peer.passes.append(await plain_openai_loop(base, suite))
            progress(f"server: fmstack Runner, concurrency {CONCURRENT}, pass {p + 1}/{passes}")
            remote.passes.append(await run_suite(fresh_store(root, "remote"), generator, suite, CONCURRENT, True))
    return [peer, remote]


async def run_all(args: argparse.Namespace, root: Path) -> tuple[list[ConfigResult], int]:
    """Every configuration, strictly one after the other; one that fails is reported, not fatal."""
    from fmstack.app.eval.suite import load_suite

    suite = load_suite(write_suite(root, args.cases))
    results: list[ConfigResult] = []
    jobs: list[tuple[str, Callable[[], Awaitable[list[ConfigResult]]]]] = [
        ("in-process", lambda: bench_in_process(suite, root, args.passes, console.log)),
        ("server", lambda: bench_server(suite, root, args.passes, console.log)),
    ]
    for name, job in jobs:
        try:
            results.extend(await job())
        except Exception as exc:  # one broken target must not hide the others' numbers
            console.log(f"[red]{name} failed: {type(exc).__name__}: {exc}")
            results.append(ConfigResult(name, name, 0, "", error=f"{type(exc).__name__}: {exc}"))
    return results, len(suite.cases)


# --------------------------------------------------------------------------------------------------- report


def agreement(results: list[ConfigResult]) -> dict:
    """Per configuration, how many cases got exactly the first configuration's answer (greedy: all should)."""
    ok = [r for r in results if r.passes]
    if not ok:
        return {}
    base = ok[0].passes[0].outputs
    return {r.name: sum(base.get(k) == v for k, v in r.passes[0].outputs.items()) for r in ok[1:]}


def comparisons(results: list[ConfigResult]) -> dict:
    """Speed-ups against the serial in-process baseline, and fmstack's harness against the plain loop."""
    rate = {r.name: r.median("cases_per_s") for r in results if r.passes}
    names = [r.name for r in results if r.passes]
    base = rate.get(names[0]) if names else None
    out: dict = {"vs_serial": {n: rate[n] / base for n in names} if base else {}}
    peer = next((r for r in results if r.kind == "server" and r.cache == "none" and r.passes), None)
    remote = next((r for r in results if r.kind == "server" and r.cache == "cold" and r.passes), None)
    if peer and remote:
        out["runner_vs_plain_loop_over_http"] = remote.median("cases_per_s") / peer.median("cases_per_s")
    out["identical_answers"] = agreement(results)
    return out


def print_table(results: list[ConfigResult], comp: dict, n: int) -> None:
    out = Console(width=max(Console().width, 120))
    table = Table(title=f"Eval benchmark: {n} cases, {MODEL}, max_tokens {MAX_TOKENS} (median over passes)")
    for col in ("configuration", "cases/s", "wall s", "× serial", "from cache", "errors", "numeric mean"):
        table.add_column(col, justify="left" if col == "configuration" else "right")
    for r in results:
        if r.error:
            table.add_row(r.name, f"[red]{r.error[:70]}", *[""] * 5)
            continue
        scores = r.passes[0].scores
        table.add_row(r.name, f"{r.median('cases_per_s'):.2f}", f"{r.median('wall_s'):.1f}",
                      f"{comp['vs_serial'].get(r.name, 0):.2f}", f"{r.passes[-1].cached}/{r.passes[-1].cases}",
                      str(max(p.errors for p in r.passes)),
                      f"{next((v for k, v in scores.items() if k.startswith('numeric')), 0):.2f}")
    out.print(table)
    if (ratio := comp.get("runner_vs_plain_loop_over_http")) is not None:
        out.print(f"fmstack Runner (concurrency {CONCURRENT}) / plain openai loop, both over HTTP: {ratio:.2f}x")
    out.print(f"cases with the first configuration's exact answer: {comp['identical_answers']}")


def plot(results: list[ConfigResult], path: Path, info: dict) -> None:
    """Cases per second per configuration, with every pass as a dot over the median bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in results if r.passes]
    colors = {"in-process": "#4c72b0", "server": "#dd8452"}
    fig, ax = plt.subplots(figsize=(11, 4.8))
    names = [r.name.replace(", ", ",\n").replace(" -> ", "\n-> ") for r in ok]
    bars = ax.bar(names, [r.median("cases_per_s") for r in ok], color=[colors[r.kind] for r in ok])
    ax.bar_label(bars, fmt="%.1f")
    for i, r in enumerate(ok):
        ax.scatter([i] * len(r.passes), [p.cases_per_s for p in r.passes], color="black", s=12, zorder=3)
    ax.set_yscale("log")
    ax.set(ylabel="cases per second (log scale)",
           title=f"{info['cases']} cases, {MODEL}, max_tokens={MAX_TOKENS}, {info['cpu_count']} CPUs "
                 f"(blue: in-process Runner; orange: over fmstack's HTTP server)")
    ax.title.set_fontsize(10)
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def machine_info(args: argparse.Namespace, n: int) -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "llama_cpp_python": importlib.metadata.version("llama-cpp-python"),
        "fmstack": importlib.metadata.version("fmstack"),
        "model": MODEL,
        "cases": n,
        "max_tokens": MAX_TOKENS,
        "passes": args.passes,
        "quick": args.quick,
        "loadavg_at_start": os.getloadavg(),  # anything else running on the CPU skews every number
    }


def save(results: list[ConfigResult], comp: dict, info: dict, out: Path) -> None:
    data = {"machine": info, "comparison": comp,
            "configurations": {r.name: {"kind": r.kind, "concurrency": r.concurrency, "cache": r.cache,
                                        "error": r.error, "summary": r.summary() if r.passes else None,
                                        "passes": [asdict(p) for p in r.passes]} for r in results}}
    out.write_text(json.dumps(data, indent=1))


# --------------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=CASES, help=f"cases in the generated suite (default {CASES})")
    p.add_argument("--passes", type=int, default=2, help="passes per configuration (default 2)")
    p.add_argument("--quick", action="store_true", help="smoke run: 8 cases, one pass")
    p.add_argument("--out", type=Path, default=RESULTS, help="directory for eval.json and eval.png")
    args = p.parse_args(argv)
    if args.quick:
        args.cases, args.passes = min(args.cases, 8), 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fmstack-bench-eval-") as tmp:
        os.environ["FMSTACK_HOME"] = tmp  # the pool's registry, and nothing of the user's store is touched
        results, n = asyncio.run(run_all(args, Path(tmp)))
    info = machine_info(args, n)
    info["loadavg_at_end"] = os.getloadavg()
    comp = comparisons(results)
    print_table(results, comp, n)
    save(results, comp, info, args.out / "eval.json")
    plot(results, args.out / "eval.png", info)
    console.log(f"wrote {args.out / 'eval.json'} and {args.out / 'eval.png'}")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
