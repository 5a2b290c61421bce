"""Measuring machinery of benchmarks/serve.py: streamed requests and their timings, batches sent at a given
concurrency, servers started and always stopped, and the share of the CPU other processes took meanwhile."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import math
import os
import socket
import statistics
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from rich.console import Console

console = Console(stderr=True)

FOREIGN_CPU_WARN = 0.05  # a batch during which other processes took more than this share of the CPU is flagged
IDLE_SHARE = 0.10


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
    tokens: int = 0  # completion tokens the target reports (counted content chunks when it reports none)
    chunks: int = 0  # non-empty content pieces received
    prompt_tokens: int | None = None
    cached_tokens: int | None = None  # prompt tokens the target says it took from its cache
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

    def ttft(self, q: float) -> float | None:
        return percentile([s.ttft for s in self.streams if s.ok and s.ttft is not None], q)

    def decode_tps(self) -> float | None:
        """Median over prompts of the per-prompt median over repeats (robust to one noisy request)."""
        return median_per_prompt(self.streams, lambda s: s.decode_tps)

    def texts(self) -> dict[int, str]:
        """The text of each prompt (its first successful stream)."""
        out: dict[int, str] = {}
        for s in self.streams:
            if s.ok:
                out.setdefault(s.prompt, s.text)
        return out

    def summary(self) -> dict:
        return {
            "concurrency": self.concurrency,
            "requests": len(self.streams),
            "failures": self.failures,
            "tokens": self.tokens,
            "wall_s": self.wall,
            "aggregate_tps": self.aggregate_tps,
            "decode_tps_median": self.decode_tps(),
            "ttft_s_p50": self.ttft(50),
            "ttft_s_p95": self.ttft(95),
            "foreign_cpu_share": self.foreign_cpu,
            "discarded_tries_foreign_cpu": self.discarded,
            "errors": sorted({s.error for s in self.streams if s.error}),
        }


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default), None for no values."""
    if not values:
        return None
    xs = sorted(values)
    k = (len(xs) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def median(values: list[float | None]) -> float | None:
    xs = [v for v in values if v is not None]
    return statistics.median(xs) if xs else None


def median_per_prompt(streams: list[StreamResult], value: Callable[[StreamResult], float | None]) -> float | None:
    by_prompt: dict[int, list[float]] = {}
    for s in streams:
        if (v := value(s)) is not None:
            by_prompt.setdefault(s.prompt, []).append(v)
    return median([statistics.median(vs) for vs in by_prompt.values()])


# --------------------------------------------------------------------------------------------------- requests

Messages = list[dict[str, str]]
StreamFn = Callable[[int, Messages], Awaitable[StreamResult]]


async def run_batch(stream: StreamFn, requests: list[tuple[int, Messages]], concurrency: int) -> BatchResult:
    """Send `requests` (prompt index, messages) with at most `concurrency` in flight; wall time covers them all."""
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int, messages: Messages) -> StreamResult:
        async with gate:
            return await stream(index, messages)

    t0 = time.perf_counter()
    streams = await asyncio.gather(*(one(i, m) for i, m in requests))
    return BatchResult(concurrency, time.perf_counter() - t0, list(streams))


def http_stream_fn(client: httpx.AsyncClient, base: str, model: str, max_tokens: int, extra: dict) -> StreamFn:
    """Streams a chat completion over SSE; TTFT is the first non-empty content delta, as users see it."""

    async def stream(index: int, messages: Messages) -> StreamResult:
        body = {
            "model": model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        } | extra
        r = StreamResult(index)
        t0 = time.perf_counter()
        try:
            async with client.stream("POST", f"{base}/v1/chat/completions", json=body) as resp:
                if resp.status_code != 200:
                    body_text = (await resp.aread())[:200].decode(errors="replace")
                    r.error = f"HTTP {resp.status_code}: {body_text}"
                else:
                    await _read_sse(resp.aiter_lines(), r, t0)
        except Exception as exc:  # a failed request is a result, not a crash of the benchmark
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
            error = obj["error"]
            r.error = f"in-stream error: {error.get('message') if isinstance(error, dict) else error}"
            return
        if usage := obj.get("usage"):
            r.tokens = usage.get("completion_tokens") or 0
            r.prompt_tokens = usage.get("prompt_tokens")
            r.cached_tokens = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
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
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """How much CPU other programs took while a target ran: on 2 cores, any of it slows llama.cpp a lot
    (its threads spin at barriers; one descheduled thread stalls the other), so such numbers are flagged."""

    def __init__(self, server_pid: int | None = None) -> None:
        self.server_pid = server_pid
        self._t0 = time.perf_counter()
        self._busy0 = cpu_busy_seconds()
        self._ours0 = time.process_time()
        self._server0 = process_cpu_seconds(server_pid) if server_pid else 0.0

    def foreign_share(self) -> float:
        """Fraction of the machine's CPU capacity used by other processes since the meter started."""
        wall = time.perf_counter() - self._t0
        ours = time.process_time() - self._ours0
        if self.server_pid is not None:
            with contextlib.suppress(OSError):
                ours += process_cpu_seconds(self.server_pid) - self._server0
        foreign = cpu_busy_seconds() - self._busy0 - ours
        return max(0.0, foreign / (wall * (os.cpu_count() or 1))) if wall > 0 else 0.0


async def wait_for_idle(max_wait: float, server_pid: int | None = None) -> None:
    """On a shared machine, measure only once others leave the CPU (waiting at most `max_wait` s)."""
    if max_wait <= 0:
        return
    deadline = time.monotonic() + max_wait
    said = False
    while time.monotonic() < deadline:
        meter = CpuMeter(server_pid)
        await asyncio.sleep(3)
        if meter.foreign_share() < IDLE_SHARE:
            return
        if not said:
            console.log("waiting for other processes to leave the CPU")
            said = True
    console.log("[yellow]the CPU did not become idle; measuring anyway")


# --------------------------------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_STARTED: set[subprocess.Popen] = set()


@atexit.register
def _kill_leftovers() -> None:
    """Last resort (e.g. SIGTERM): no server of ours outlives the benchmark."""
    for proc in _STARTED:
        if proc.poll() is None:
            proc.kill()


@contextlib.contextmanager
def server(
    name: str, cmd: list[str], env: dict[str, str], base: str, health: str, log: Path, cwd: Path
) -> Iterator[int]:
    """Start a server process, wait until `health` answers 200, yield its pid, and always stop it."""
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
    _STARTED.add(proc)
    try:
        wait_ready(proc, base + health, name, log)
        yield proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        _STARTED.discard(proc)


def wait_ready(proc: subprocess.Popen, url: str, name: str, log: Path, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    with console.status(f"starting {name}"):
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            time.sleep(0.5)
    raise RuntimeError(f"{name} did not become ready within {timeout:.0f} s; see {log}")
