"""What a GGUF variant costs and how far it drifts: speed and memory as served, perplexity and divergence from the
highest-precision variant on a held-out text.

Each variant is measured in a process of its own (`python -m fmstack.model.export.measure`), one after the other,
so its load time and peak resident memory are its own and not what an earlier model left in this process. In that
process:

1. The model is loaded on the llamacpp engine that `fmstack up` serves it with (load time), and generates through
   it: prefill tokens/s on three fresh passages of up to 320 tokens (no prefix cache hits; the median), decode
   tokens/s of one stream (64 tokens after the first, end-of-generation tokens banned so every run decodes as
   long), and the generated tokens/s of `streams` requests at once (the engine's continuous batching; prompts
   included). Peak RSS is read (VmHWM) after these, so it is the serving footprint.
2. With a held-out text: the text is read in windows of 512 tokens, as llama.cpp's perplexity program does, and
   every next-token distribution is kept. The reference variant (the most bits per weight) writes its
   log-probabilities to a temporary file, each row quantized to 16 bits over its own range (llama.cpp's
   `--kl-divergence-base` format idea: exact enough for KL values of 1e-4, half the size of float32); every other
   variant reads them back and reports the mean KL(reference || variant) over the same tokens, its 99th
   percentile, and how often both put the same token first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import gguf
import llama_cpp
import numpy as np

from fmstack.core.config import Settings, get_settings
from fmstack.core.errors import FmstackError, InvalidRequest
from fmstack.core.registry import Registry

CHUNK = 512  # tokens per perplexity window
PREFILL_TOKENS = 320  # at most: shorter for a model with a short context
DECODE_TOKENS = 64
STREAM_TOKENS = 32
PASSAGE = (
    "The harbour town woke slowly. Fishing boats came in on the tide, gulls argued over the nets, and the baker "
    "opened his shutters to a queue that already reached the corner. Down by the quay, the harbour master checked "
    "the weather board and chalked up a warning: wind rising from the west in the afternoon, a swell of two "
    "metres, visibility falling towards evening. Nobody paid it much attention; the town had seen worse every "
    "winter for three hundred years. At the school on the hill, the children were learning about the lighthouse, "
    "which had been built after a storm sank four ships in a single night. Its lamp had been lit by hand for a "
    "century, then by clockwork, then by electricity, and now by a computer in a city two hundred kilometres away. "
    "The old keeper still lived in the cottage at its foot and still climbed the stairs every evening, out of habit "
    "rather than duty, to watch the beam sweep across the water and count the ships that passed."
)
STORY = "Write a long, detailed story about the lighthouse keeper of a small harbour town."


@dataclass
class Measurement:
    """One variant, measured in its own process."""

    name: str
    path: str
    size_bytes: int
    bits_per_weight: float
    load_s: float
    peak_rss_mb: float
    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    streams: int
    streams_tokens_per_s: float  # generated tokens/s of `streams` concurrent requests, all together
    text_tokens: int | None = None  # held-out tokens scored (None: no --text)
    perplexity: float | None = None
    reference: str | None = None  # the highest-precision variant: KL, top-1 and task differences are to it
    kl_mean: float | None = None
    kl_p99: float | None = None
    top1_agreement: float | None = None
    note: str | None = None


def bits_per_weight(path: Path) -> float:
    """Bits stored per weight (all tensors): what orders variants of one model by precision."""
    tensors = gguf.GGUFReader(path).tensors
    return 8 * sum(int(t.n_bytes) for t in tensors) / max(1, sum(int(t.n_elements) for t in tensors))


def measure_variants(
    names: list[str],
    settings: Settings,
    text: Path | None = None,
    *,
    text_tokens: int = 1024,
    streams: int = 8,
    reference: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[Measurement]:
    """Measure every variant (each in its own process, the reference first); returned in the order given. The
    reference is the variant with the most bits per weight unless named (a teacher, say)."""
    paths = _gguf_paths(names, settings)
    if text is not None and not text.is_file():
        raise InvalidRequest(f"--text {text}: no such file; give a plain-text file the models were not trained on.")
    if reference is not None and reference not in names:
        raise InvalidRequest(f"--reference {reference!r} is not one of the models compared ({', '.join(names)}).")
    precision = {name: bits_per_weight(path) for name, path in paths.items()}
    reference = reference or max(names, key=lambda n: precision[n])
    measured = {}
    with tempfile.TemporaryDirectory(prefix="fmstack-measure-") as tmp:
        for name in [reference, *(n for n in names if n != reference)]:
            if progress:
                progress(name)
            role = ("--save-reference" if name == reference else "--reference", tmp)
            measured[name] = _run_worker(name, text, text_tokens, streams, role, Path(tmp) / f"{name}.json")
    for m in measured.values():
        m.reference = reference
    return [measured[n] for n in names]


def _gguf_paths(names: list[str], settings: Settings) -> dict[str, Path]:
    if len(set(names)) < 2:
        raise InvalidRequest("give at least two different models to compare, e.g. NAME-f16 NAME-q8_0 NAME-q4_k_m.")
    registry, paths = Registry(settings), {}
    for name in names:
        spec = registry.get(name)
        if spec.engine != "llamacpp":
            raise InvalidRequest(
                f"'{name}' runs on {spec.engine}; compare measures GGUF files (llamacpp). Export it first: "
                f"fmstack model quantize {name} --quant f16,q8_0,q4_k_m."
            )
        paths[name] = spec.local_path(settings)
    return paths


def _run_worker(name: str, text: Path | None, tokens: int, streams: int, role: tuple[str, str], out: Path):
    cmd = [sys.executable, "-m", "fmstack.model.export.measure", "--model", name, "--out", str(out),
           "--text-tokens", str(tokens), "--streams", str(streams), *role]  # fmt: skip
    if text is not None:
        cmd += ["--text", str(text)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise FmstackError(f"measuring '{name}' failed (exit {done.returncode}): {last}")
    return Measurement(**json.loads(out.read_text()))


# ---------------------------------------------------------------- in the worker process


def measure_one(name: str, text: str | None, tokens: int, streams: int, reference: Path, save: bool) -> Measurement:
    """Speed and memory through the engine, then perplexity and divergence on the text."""
    from fmstack.engines.pool import load_engine

    settings = get_settings()
    spec = Registry(settings).get(name)
    path = spec.local_path(settings)
    started = time.perf_counter()
    engine = load_engine(spec, settings)
    load_s = time.perf_counter() - started
    try:
        prefill, decode, together = asyncio.run(_speeds(engine, streams))
    finally:
        engine.close()
    result = Measurement(name, str(path), path.stat().st_size, round(bits_per_weight(path), 3), round(load_s, 3),
                         round(_peak_rss_mb(), 1), round(prefill, 1), round(decode, 2), streams,
                         round(together, 2))  # fmt: skip
    if text is not None:
        _quality(result, path, text, tokens, settings.threads, reference, save)
    return result


async def _speeds(engine, streams: int) -> tuple[float, float, float]:
    from fmstack.engines.base import GenerationRequest

    banned = {token: -100.0 for token in _end_tokens(engine.model)}

    def request(prompt: str, max_tokens: int) -> GenerationRequest:
        return GenerationRequest(prompt=prompt, max_tokens=max_tokens, temperature=0.0, logit_bias=banned,
                                 speculative=False)  # fmt: skip

    await _timed(engine, request("Warm-up.", 4))
    passages = [
        _fit(engine, f"Passage {i}. {PASSAGE}", min(PREFILL_TOKENS, engine.context_length // 2)) for i in range(3)
    ]
    prefills = [await _timed(engine, request(passage, 1)) for passage in passages]
    prefill = sorted((p.prompt - p.cached) / p.total for p in prefills)[1]
    one = await _timed(engine, request(f"{STORY}\n\n", DECODE_TOKENS + 1))
    many = [request(f"Story {i}. {STORY}\n\n", STREAM_TOKENS) for i in range(streams)]
    started = time.perf_counter()
    runs = await asyncio.gather(*(_timed(engine, r) for r in many))
    together = sum(r.completion for r in runs) / (time.perf_counter() - started)
    return prefill, one.decode_rate, together


def _fit(engine, text: str, limit: int) -> str:
    """`text` cut at a word boundary to at most `limit` tokens, so a short-context model can still be timed."""
    words = text.split()
    while len(engine.model.tokenize(" ".join(words).encode(), add_bos=True, special=False)) > limit:
        words = words[: int(len(words) * 0.9)]
    return " ".join(words)


@dataclass
class _Timing:
    prompt: int
    cached: int
    completion: int
    total: float  # seconds from submitting to the end
    decoding: float  # seconds from the first generated text to the end

    @property
    def decode_rate(self) -> float:
        return (self.completion - 1) / self.decoding if self.decoding > 0 else math.nan


async def _timed(engine, request) -> _Timing:
    from fmstack.engines.base import Finish

    prepared = engine.prepare(request)
    started, first, finish = time.perf_counter(), None, None
    async for event in engine.stream(prepared):
        if isinstance(event, Finish):
            finish = event
        elif first is None:
            first = time.perf_counter()
    end = time.perf_counter()
    assert finish is not None, "every engine stream ends with Finish"
    return _Timing(finish.prompt_tokens, finish.cached_tokens, finish.completion_tokens, end - started,
                   end - (first or end))  # fmt: skip


def _end_tokens(model) -> list[int]:
    """Every end-of-generation token, so that banning them makes each run decode the same number of tokens."""
    return [t for t in range(model.n_vocab()) if llama_cpp.llama_vocab_is_eog(model.vocab, t)]


def _peak_rss_mb() -> float:
    """The process's peak resident memory (VmHWM: Linux, and this process only — see the memory tests)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _quality(result: Measurement, path: Path, text: str, tokens: int, threads: int, ref: Path, save: bool) -> None:
    """Perplexity on the text; KL divergence and top-1 agreement against the reference's saved distributions."""
    from llama_cpp._internals import LlamaBatch, LlamaContext

    from fmstack.engines.llamacpp import load_gguf
    from fmstack.model.export.imatrix import token_chunks, window

    model = load_gguf(path)
    try:
        chunks = token_chunks(model, text, CHUNK, "--text: the held-out text", tokens)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = params.n_batch = params.n_ubatch = window(model, CHUNK)
        params.n_threads = params.n_threads_batch = threads
        context = LlamaContext(model=model, params=params, verbose=False)
        batch = LlamaBatch(n_tokens=window(model, CHUNK), embd=0, n_seq_max=1, verbose=False)
        store = _Distributions(ref, chunks, model.n_vocab(), save)
        nll = []
        for tokens_in in chunks:
            context.kv_cache_clear()
            batch.set_batch(tokens_in, n_past=0, logits_all=True)
            context.decode(batch)
            logits = np.ctypeslib.as_array(context.get_logits(), shape=(len(tokens_in), model.n_vocab()))
            logprobs = _log_softmax(logits[:-1])
            nll.append(-logprobs[np.arange(len(tokens_in) - 1), tokens_in[1:]])
            store.add(logprobs)
        context.close()
    finally:
        model.close()
    nll_all = np.concatenate(nll)
    result.text_tokens, result.perplexity = len(nll_all), round(float(np.exp(nll_all.mean())), 4)
    store.finish(result)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


class _Distributions:
    """The reference's log-probabilities on disk (16 bits per value over each row's range), or the comparison of
    this variant's with them."""

    def __init__(self, folder: Path, chunks: list[list[int]], vocab: int, save: bool):
        rows = sum(len(c) - 1 for c in chunks)
        self.save, self.row = save, 0
        self.kl: list[np.ndarray] = []
        self.same_top1 = 0
        ids = np.array([t for c in chunks for t in c], dtype=np.int64)
        if save:
            np.save(folder / "tokens.npy", ids)
            self.values = np.lib.format.open_memmap(folder / "logprobs.npy", "w+", np.uint16, (rows, vocab))
            self.ranges = np.lib.format.open_memmap(folder / "ranges.npy", "w+", np.float32, (rows, 2))
            self.comparable = None
            return
        saved = np.load(folder / "tokens.npy")
        self.values = np.load(folder / "logprobs.npy", mmap_mode="r")
        self.ranges = np.load(folder / "ranges.npy", mmap_mode="r")
        self.comparable = saved.shape == ids.shape and bool((saved == ids).all()) and self.values.shape[1] == vocab

    def add(self, logprobs: np.ndarray) -> None:
        rows = slice(self.row, self.row + len(logprobs))
        self.row += len(logprobs)
        if self.save:
            low, high = logprobs.min(axis=1), logprobs.max(axis=1)
            scale = np.maximum(high - low, 1e-12)[:, None]
            self.values[rows] = np.rint((logprobs - low[:, None]) / scale * 65535).astype(np.uint16)
            self.ranges[rows] = np.stack([low, high], axis=1)
        elif self.comparable:
            low, high = self.ranges[rows, 0][:, None], self.ranges[rows, 1][:, None]
            reference = _log_softmax(low + self.values[rows].astype(np.float32) / 65535 * (high - low))
            self.kl.append((np.exp(reference) * (reference - logprobs)).sum(axis=1))
            self.same_top1 += int((reference.argmax(axis=1) == logprobs.argmax(axis=1)).sum())

    def finish(self, result: Measurement) -> None:
        if self.save:
            self.values.flush()
            result.kl_mean, result.kl_p99, result.top1_agreement = 0.0, 0.0, 1.0
        elif self.comparable:
            kl = np.maximum(np.concatenate(self.kl), 0.0)  # tiny negatives: the 16-bit rounding of the reference
            result.kl_mean, result.kl_p99 = round(float(kl.mean()), 6), round(float(np.percentile(kl, 99)), 6)
            result.top1_agreement = round(self.same_top1 / len(kl), 4)
        else:
            result.note = "tokenizes the text differently from the reference: no KL or top-1 agreement"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Measure one GGUF variant (run by measure_variants).")
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--text", type=Path)
    parser.add_argument("--text-tokens", type=int, default=1024)
    parser.add_argument("--streams", type=int, default=8)
    role = parser.add_mutually_exclusive_group(required=True)
    role.add_argument("--save-reference", type=Path)
    role.add_argument("--reference", type=Path)
    args = parser.parse_args(argv)
    text = args.text.read_text(encoding="utf-8", errors="replace") if args.text else None
    folder = args.save_reference or args.reference
    result = measure_one(args.model, text, args.text_tokens, args.streams, folder, args.save_reference is not None)
    args.out.write_text(json.dumps(asdict(result)))


if __name__ == "__main__":
    try:
        main()
    except FmstackError as exc:
        sys.exit(exc.message)
