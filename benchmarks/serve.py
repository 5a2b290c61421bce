"""Serving benchmark: fmstack side by side with llama.cpp called directly, llama-cpp-python's server and
llama.cpp's own C++ server, on both packaged models, in one run.

Per model (SmolLM2-135M and Qwen2.5-0.5B, the GGUFs fmstack's registry resolves), with the same threads, the same
eight prompts, greedy decoding and the same max_tokens, strictly one target after the other:

1. llama.cpp called directly: `Llama.create_completion(stream=True)` in this process, one stream (the ceiling
   for one stream);
2. `python -m llama_cpp.server`;
3. llama.cpp's C++ `llama-server -np 8` (continuous batching), built by `make bench-llama-server`; skipped, with
   the reason, when it is not built;
4. fmstack (`fmstack up`);

each at concurrency 1, 2, 4 and 8 (16 requests x 128 tokens per level): decode tok/s of one stream, aggregate
tok/s, TTFT p50/p95 and failures. Then three fmstack scenarios:

a. the same server after a /v1/embeddings request and a request to the other chat model (both then idle),
   against the numbers it gave fresh;
b. a ~1,000-token system prompt: the cold first turn, the second turn of the same conversation (its history is
   in the prefix cache), and 8 requests sharing the prompt sent at once, cold and then cached;
c. RAG-style answers that quote their context, with prompt-lookup speculation off and on (FMSTACK_SPECULATIVE):
   decode tok/s, and whether the greedy text is identical.

Usage:
    make bench-llama-server                          # once: builds llama.cpp's server (about 15 min on 2 cores)
    .venv/bin/python benchmarks/serve.py             # full run, about 40 minutes on 2 cores; needs an idle machine
    .venv/bin/python benchmarks/serve.py --quick     # smoke run: SmolLM2, concurrency 1 and 8, 8 x 32 tokens

Writes benchmarks/results/serve.json (every raw number, the machine, and the share of the CPU other processes
took) and serve.png; --quick writes serve-quick.json and serve-quick.png instead.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib.metadata
import json
import os
import platform
import re
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
from _serving import (
    FOREIGN_CPU_WARN,
    BatchResult,
    CpuMeter,
    Messages,
    StreamFn,
    StreamResult,
    console,
    free_port,
    http_stream_fn,
    median,
    run_batch,
    server,
    wait_for_idle,
)
from rich.console import Console
from rich.table import Table

MODELS = ("smollm2-135m-instruct", "qwen2.5-0.5b-instruct")
EMBEDDING_MODEL = "all-minilm-l6-v2"
RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
LLAMA_SERVER = Path.home() / ".cache/fmstack/llama-server-0.3.36/bin/llama-server"  # `make bench-llama-server`
RETRIES = 3
N_CTX = 8192  # the context every baseline gets (fmstack's registry serves both models at 8192)
SERVER_SLOTS = 8  # llama-server -np; fmstack's FMSTACK_PARALLEL default is 8 too
SERVER_KV = 16384  # llama-server's unified KV cells, as fmstack's FMSTACK_KV_TOKENS default

DIRECT, LLAMA_PY, LLAMA_CPP, FMSTACK = "llama.cpp direct", "llama_cpp.server", "llama-server -np 8", "fmstack"
TARGETS = (DIRECT, LLAMA_PY, LLAMA_CPP, FMSTACK)
SCENARIOS = ("after-use", "prefix-cache", "prompt-lookup")
COLORS = {DIRECT: "#7f7f7f", LLAMA_PY: "#dd8452", LLAMA_CPP: "#55a868", FMSTACK: "#4c72b0"}

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

# Scenario b: a support desk's system prompt of about 1,000 tokens (1,052 for SmolLM2's tokenizer).
POLICY = """\
You are the support assistant of Northwind Outfitters, an online shop for hiking, camping and climbing gear. \
Answer customers politely and briefly, using only the policies below. When a policy does not cover a question, say \
so and offer to pass the question to a human colleague.

1. Returns. Unused items in their original packaging can be returned within 30 days of delivery for a full refund. \
Items that were used outdoors can be returned within 14 days if they are clean and undamaged; we refund 80 % of the \
price.
2. Refunds go back to the original payment method within 5 business days after the returned parcel reaches our \
warehouse in Leeds. Gift cards are refunded as store credit.
3. Return shipping is free for customers in the United Kingdom. Customers elsewhere pay for return shipping unless \
the item arrived damaged or was not what they ordered.
4. Damaged deliveries must be reported within 7 days with a photo of the item and of the parcel. We send a \
replacement at once, without waiting for the damaged item to come back.
5. Delivery. Standard delivery in the United Kingdom takes 2 to 4 business days and is free above 50 pounds; below \
that it costs 3.95 pounds. Express delivery arrives the next business day when ordered before 2 pm and costs 7.50 \
pounds.
6. We ship to the European Union, Norway and Switzerland in 4 to 8 business days. Customs duties for Norway and \
Switzerland are paid by the customer on delivery.
7. Orders can be changed or cancelled free of charge until they are packed, usually within 2 hours of ordering. \
After that, the customer can refuse the parcel or return it.
8. Warranty. Tents, backpacks and sleeping bags have a 3-year warranty against manufacturing defects. Climbing \
hardware has a 1-year warranty. Wear and tear, misuse and damage from fire are not covered.
9. Warranty claims need the order number and photos of the defect. We repair the item when we can, replace it when \
we cannot, and refund it when neither is possible.
10. Repairs outside the warranty are offered for tents and jackets at a fixed price of 25 pounds plus parts, with a \
turnaround of about 3 weeks.
11. Climbing safety. Ropes, harnesses, slings and carabiners that have held a serious fall must be retired, \
whatever their age. We never advise a customer that such equipment is still safe to use.
12. Ropes must be retired after 10 years even when unused, and sooner with frequent use. Harnesses follow the same \
rule. Customers should always follow the manufacturer's instructions.
13. Price match. We match the price of any shop in the United Kingdom for the same item in stock, within 7 days of \
the purchase. Marketplace sellers and clearance sales are excluded.
14. Discounts cannot be combined. Students get 10 % off with a valid student card; members of a mountain rescue team \
get 15 % off.
15. Gift cards are valid for 2 years, can be used for several orders, and cannot be exchanged for cash.
16. Rentals. Tents, stoves and backpacks can be rented for 3 to 21 days. Rental gear is cleaned and inspected \
between customers. A deposit of 100 pounds is held on the card and released within 3 days of the return.
17. Late rental returns cost 10 pounds a day. Rental gear damaged beyond normal wear is charged at the cost of \
repair, and at most the price of a new item.
18. Accounts. Customers can change their address, password and newsletter settings in their account. For security, \
the support team cannot see or change passwords.
19. Personal data is handled under our privacy policy. Customers can ask for a copy of their data or for its \
deletion; we answer within 30 days.
20. Loyalty programme. Customers earn one point per pound spent. One hundred points are worth 5 pounds off a later \
order. Points expire after 18 months without an order.
21. Sizing. Boot sizes follow the United Kingdom scale; we recommend trying boots in the afternoon, with the socks \
that will be worn on the trail. Boots worn only indoors can be exchanged for another size within 30 days.
22. Stock. Items marked as pre-order ship on the date shown on the product page. Customers are charged when the \
item ships, not when they order.
23. Complaints are answered within 2 business days. A customer who is not satisfied with the answer can ask for the \
complaint to be reviewed by the customer service manager.
24. Tone. Be friendly and factual. Do not promise anything the policies above do not allow, do not give medical or \
legal advice, and never ask for full card numbers."""
POLICY_QUESTIONS = [
    "I bought a tent three weeks ago and used it once. Can I still return it, and how much do I get back?",
    "My parcel arrived with a broken stove. What should I do?",
    "How long does delivery to Germany take, and do I pay customs?",
    "My climbing rope held a big fall last weekend but looks fine. Can I keep using it?",
    "Can I combine my student discount with a price match?",
    "I want to rent a backpack for two weeks. How does the deposit work?",
    "How many loyalty points do I need for 10 pounds off?",
    "My sleeping bag's zip broke after two years. Is that covered?",
]
POLICY_QUESTIONS_B = [  # the second burst: the same system prompt, other questions
    "Can I cancel an order I placed an hour ago?",
    "Do gift cards expire?",
    "How much does express delivery cost?",
    "Can you tell me my password?",
    "What happens if I return a rented tent two days late?",
    "Do you match prices from marketplace sellers?",
    "How do I get a copy of my personal data?",
    "Can I exchange boots for another size after wearing them indoors?",
]
FOLLOW_UP = "Thanks. Please sum that up in one sentence, and tell me which policy number it comes from."

# Scenario c: RAG answers that quote their context, where prompt lookup drafts well.
RAG_SYSTEM = (
    "Answer the question from the context only. Quote the sentences of the context that answer it, word for word, "
    "in quotation marks, then add one sentence of your own."
)
RAG_PASSAGES = [
    "The Model K2 water filter removes bacteria and protozoa from river and lake water. Its hollow-fibre cartridge "
    "has a pore size of 0.1 microns and filters up to 1,500 litres before it must be replaced. To use the filter, "
    "fill the soft bottle with untreated water, screw the filter onto the bottle, and squeeze the bottle gently. "
    "After each trip, backflush the cartridge with clean water using the syringe in the box, and let it dry with "
    "the caps off. Never let a wet cartridge freeze: ice cracks the fibres, and a cracked cartridge no longer "
    "removes bacteria. The filter does not remove viruses or chemicals, so in places where those are a concern, "
    "treat the water with chlorine tablets as well.",
    "To pitch the Ridge 2 tent, first lay out the footprint with its shiny side up, and peg its four corners. "
    "Spread the inner tent over the footprint and clip the buckles at each corner to the footprint's webbing. "
    "Assemble the two colour-coded poles, cross them over the inner tent, and push their ends into the grommets of "
    "the matching colour. Clip the inner tent to the poles, starting from the bottom of each pole. Throw the fly "
    "over the frame with its door above the inner tent's door, fasten the fly to the corner buckles, and tension "
    "the straps until the fly does not touch the inner tent. In strong wind, peg out all six guylines and point "
    "the narrow end of the tent into the wind.",
    "Our library lends up to 12 items at a time to each member. Books can be borrowed for 3 weeks and renewed twice "
    "online, unless another member has reserved them. Films and games can be borrowed for 1 week and cannot be "
    "renewed. Items returned late cost 20 pence a day for adults; children and members over 65 pay no late fees. "
    "A lost item is charged at its replacement cost plus a processing fee of 3 pounds. Reservations are free, and "
    "members are told by email when a reserved item is ready; it is then kept at the front desk for 7 days. The "
    "library is open from 9 am to 8 pm on weekdays and from 10 am to 4 pm on Saturdays.",
    "Version 2.4 of the Beacon app adds offline maps: a region can be downloaded from the map screen by tapping the "
    "cloud icon, and downloaded regions stay available for 30 days without a connection. Route recording now uses "
    "less battery, because the GPS is sampled every 5 seconds instead of every second when the phone is not moving. "
    "The emergency button sends the current position by text message to up to 3 contacts, and it works without "
    "mobile data. Known issue: on some Android phones, recording stops when the battery saver turns on; to avoid "
    "this, exclude Beacon from battery optimisation in the phone's settings.",
]
RAG_QUESTIONS = [
    ("How do I clean the filter after a trip?", "Which contaminants does the filter not remove?"),
    ("How do I attach the poles?", "What should I do when it is windy?"),
    ("How long can I keep a book, and what if I return it late?", "What happens when my reservation is ready?"),
    ("How do I download a map for offline use?", "Why might recording stop on Android, and how do I fix it?"),
]


def user(text: str) -> Messages:
    return [{"role": "user", "content": text}]


def rag_requests() -> list[Messages]:
    """Eight RAG questions: each passage with each of its two questions."""
    out = []
    for q in range(2):
        for passage, questions in zip(RAG_PASSAGES, RAG_QUESTIONS, strict=True):
            out.append(
                [
                    {"role": "system", "content": RAG_SYSTEM},
                    {"role": "user", "content": f"Context:\n{passage}\n\nQuestion: {questions[q]}"},
                ]
            )
    return out


# --------------------------------------------------------------------------------------------------- results


@dataclass
class TargetResult:
    name: str
    levels: list[BatchResult] = field(default_factory=list)  # one batch per concurrency level
    error: str | None = None  # it ran and failed
    skipped: str | None = None  # it could not run here (not built)
    command: list[str] | None = None

    def level(self, concurrency: int) -> BatchResult | None:
        return next((b for b in self.levels if b.concurrency == concurrency), None)

    def decode_tps(self) -> float | None:
        """Decode tok/s of one stream: the median over prompts at concurrency 1."""
        single = self.level(1)
        return single.decode_tps() if single else None

    @property
    def foreign_cpu(self) -> float:
        return max((b.foreign_cpu for b in self.levels), default=0.0)

    def to_json(self) -> dict:
        single = self.level(1)
        texts = single.texts() if single else {}
        first = {}
        for s in single.streams if single else []:
            first.setdefault(s.prompt, s)
        levels = []
        for b in self.levels:
            streams = []
            for s in b.streams:
                row = asdict(s)
                # keep each prompt's text once (its first stream at concurrency 1) and wherever it differs
                if s is not first.get(s.prompt) and texts.get(s.prompt) == s.text:
                    row["text"] = None
                streams.append(row)
            levels.append(b.summary() | {"streams": streams})
        return {
            "error": self.error,
            "skipped": self.skipped,
            "command": self.command,
            "decode_tps_1_stream": self.decode_tps(),
            "foreign_cpu_share_max": self.foreign_cpu,
            "levels": levels,
        }


@dataclass
class Run:
    """Everything measured so far, per model: targets, text comparisons and scenarios."""

    args: argparse.Namespace
    info: dict
    models: dict[str, dict] = field(default_factory=dict)  # name -> {"path", "targets": {...}, "scenarios": {...}}

    def targets(self, model: str) -> dict[str, TargetResult]:
        return self.models[model]["targets"]

    def foreign_cpu(self) -> float:
        shares = [t.foreign_cpu for m in self.models.values() for t in m["targets"].values()]
        shares += [s.get("foreign_cpu_share", 0.0) for m in self.models.values() for s in m["scenarios"].values()]
        return max(shares, default=0.0)


# --------------------------------------------------------------------------------------------------- measuring


def requests_for(n: int) -> list[tuple[int, Messages]]:
    return [(i % len(PROMPTS), user(PROMPTS[i % len(PROMPTS)])) for i in range(n)]


async def clean_batch(
    label: str,
    stream: StreamFn,
    requests: list[tuple[int, Messages]],
    concurrency: int,
    args: argparse.Namespace,
    server_pid: int | None,
) -> BatchResult:
    """A batch measured while the CPU was ours: with --wait-idle, a batch that other processes disturbed
    (they took over FOREIGN_CPU_WARN of the CPU) is thrown away and redone once they leave, up to RETRIES times."""
    discarded: list[float] = []
    while True:
        console.log(f"{label}" + (f" (retry {len(discarded)}: the CPU was busy)" if discarded else ""))
        meter = CpuMeter(server_pid)
        batch = await run_batch(stream, requests, concurrency)
        batch.foreign_cpu = meter.foreign_share()
        if batch.foreign_cpu <= FOREIGN_CPU_WARN or args.wait_idle <= 0 or len(discarded) >= RETRIES:
            batch.discarded = discarded
            return batch
        discarded.append(batch.foreign_cpu)
        await wait_for_idle(args.wait_idle, server_pid)


async def measure(
    result: TargetResult, stream: StreamFn, levels: tuple[int, ...], args: argparse.Namespace, pid: int | None
) -> TargetResult:
    """Warm up once, then `args.requests` requests at each concurrency level."""
    warm = await stream(-1, user(WARMUP_PROMPT))
    if not warm.ok:
        raise RuntimeError(f"warm-up request failed: {warm.error}")
    for c in levels:
        batch = await clean_batch(
            f"{result.name}: {args.requests} requests, {c} at a time", stream, requests_for(args.requests), c, args, pid
        )
        result.levels.append(batch)
        p50, p95 = batch.ttft(50), batch.ttft(95)
        console.log(
            f"  {batch.aggregate_tps:.1f} tok/s aggregate, decode {batch.decode_tps() or 0:.1f} tok/s, "
            f"TTFT p50 {p50 or 0:.2f} s p95 {p95 or 0:.2f} s, {batch.failures} failed, "
            f"other CPU {100 * batch.foreign_cpu:.0f} %"
        )
    return result


# ---------------------------------------------------------------------------------- llama.cpp called directly


class DirectLlama:
    """llama-cpp-python's `Llama` in this process, prompted with the tokens fmstack would send: the GGUF's chat
    template rendered by the same formatter, tokenized with special tokens and no BOS. Greedy, one stream."""

    def __init__(self, path: Path, threads: int, max_tokens: int):
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.llm = Llama(
            model_path=str(path),
            n_ctx=N_CTX,
            n_batch=512,
            n_ubatch=512,
            n_threads=threads,
            n_threads_batch=threads,
            flash_attn=True,  # as fmstack's engine and the other servers here
            verbose=False,
        )
        model = self.llm._model

        def text(token: int) -> str:
            return model.token_get_text(token) if token >= 0 else ""

        self.formatter = Jinja2ChatFormatter(
            self.llm.metadata["tokenizer.chat_template"],
            eos_token=text(self.llm.token_eos()),
            bos_token=text(self.llm.token_bos()),
        )
        self.max_tokens = max_tokens

    def complete(self, index: int, messages: Messages) -> StreamResult:
        from llama_cpp import StoppingCriteriaList

        r = StreamResult(index)
        prompt = self.formatter(messages=messages).prompt
        tokens = self.llm.tokenize(prompt.encode(), add_bos=False, special=True)
        r.prompt_tokens = len(tokens)
        calls = 0

        def count(_ids, _logits) -> bool:
            nonlocal calls
            calls += 1
            return False

        t0 = time.perf_counter()
        try:
            for chunk in self.llm.create_completion(
                tokens,
                max_tokens=self.max_tokens,
                temperature=0.0,
                top_k=0,
                top_p=1.0,
                min_p=0.0,
                repeat_penalty=1.0,
                stream=True,
                stopping_criteria=StoppingCriteriaList([count]),
            ):
                choice = chunk["choices"][0]
                if content := choice["text"]:
                    now = time.perf_counter() - t0
                    r.ttft = r.ttft if r.ttft is not None else now
                    r.last, r.chunks, r.text = now, r.chunks + 1, r.text + content
                r.finish_reason = choice["finish_reason"] or r.finish_reason
            # llama-cpp-python 0.3.36 asks the stopping criteria once per sampled token (the end-of-generation
            # token included) and once after the loop
            r.tokens = self.max_tokens if r.finish_reason == "length" else max(0, calls - 2)
            r.ok = r.finish_reason is not None
        except Exception as exc:
            r.error = f"{type(exc).__name__}: {exc}"
        r.total = time.perf_counter() - t0
        return r

    def close(self) -> None:
        self.llm.close()


async def bench_direct(path: Path, args: argparse.Namespace) -> TargetResult:
    result = TargetResult(DIRECT, command=[f"Llama(n_threads={args.threads}, flash_attn=True).create_completion"])
    direct = await asyncio.to_thread(DirectLlama, path, args.threads, args.max_tokens)
    try:

        async def stream(index: int, messages: Messages) -> StreamResult:
            return await asyncio.to_thread(direct.complete, index, messages)

        return await measure(result, stream, (1,), args, None)  # one context decodes one stream: the ceiling
    finally:
        direct.close()


# --------------------------------------------------------------------------------------------------- servers


@dataclass
class Server:
    """How to start one HTTP target and talk to it."""

    name: str
    cmd: list[str]
    port: int
    health: str
    model: str  # the `model` field of requests
    extra: dict = field(default_factory=dict)  # fields every request carries
    env: dict[str, str] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


# llama_cpp.server and llama-server sample with top_k 40 and (llama_cpp.server) repeat_penalty 1.1 by default;
# fmstack with neither. Greedy decoding is argmax either way, but a repeat penalty picks other tokens: align them.
GREEDY = {"top_k": 0, "top_p": 1.0, "min_p": 0.0, "repeat_penalty": 1.0}


def llama_py_server(path: Path, args: argparse.Namespace) -> Server:
    port = free_port()
    cmd = [PYTHON, "-m", "llama_cpp.server", "--model", str(path), "--model_alias", "bench", "--port", str(port),
           "--host", "127.0.0.1", "--n_ctx", str(N_CTX), "--n_threads", str(args.threads),
           "--n_threads_batch", str(args.threads), "--n_batch", "512", "--flash_attn", "True", "--verbose", "False",
           # its default cuts a running stream short whenever another request arrives
           "--interrupt_requests", "False"]
    return Server(LLAMA_PY, cmd, port, "/v1/models", "bench", GREEDY)


def llama_cpp_server(path: Path, args: argparse.Namespace) -> Server:
    port = free_port()
    cmd = [str(args.llama_server), "-m", str(path), "--host", "127.0.0.1", "--port", str(port),
           "-t", str(args.threads), "-tb", str(args.threads), "-c", str(SERVER_KV), "-np", str(SERVER_SLOTS),
           "--kv-unified", "-b", "512", "-ub", "512", "-fa", "on", "--no-webui"]
    return Server(LLAMA_CPP, cmd, port, "/health", "bench", GREEDY)


def fmstack_server(model: str, args: argparse.Namespace, speculative: bool) -> Server:
    port = free_port()
    cmd = [PYTHON, "-m", "fmstack", "up", "--model", model, "--port", str(port)]
    env = {"FMSTACK_SPECULATIVE": "1" if speculative else "0"}
    return Server(FMSTACK, cmd, port, "/healthz", model, {}, env)


def server_env(home: Path, args: argparse.Namespace) -> dict[str, str]:
    """One temporary FMSTACK_HOME for every server; the same thread count everywhere."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FMSTACK_")}
    return env | {"FMSTACK_HOME": str(home), "FMSTACK_THREADS": str(args.threads), "OMP_NUM_THREADS": str(args.threads)}


async def with_server(
    s: Server, home: Path, args: argparse.Namespace, body: Callable[[httpx.AsyncClient, StreamFn, int], Awaitable]
):
    log = home / f"{s.name.split()[0]}-{s.port}.log"
    with server(s.name, s.cmd, server_env(home, args) | s.env, s.base, s.health, log, ROOT) as pid:
        async with httpx.AsyncClient(timeout=httpx.Timeout(900.0)) as client:
            return await body(client, http_stream_fn(client, s.base, s.model, args.max_tokens, s.extra), pid)


async def bench_server(s: Server, home: Path, args: argparse.Namespace) -> TargetResult:
    async def body(_client, stream, pid):
        return await measure(TargetResult(s.name, command=s.cmd), stream, args.levels, args, pid)

    return await with_server(s, home, args, body)


# --------------------------------------------------------------------------------------------------- scenarios


async def scenario_after_use(
    client: httpx.AsyncClient, stream: StreamFn, s: Server, other: str, fresh: BatchResult, args, pid
) -> dict:
    """a. The fresh server's one-stream numbers again, after an embeddings request and a request to another chat
    model (both stay loaded, idle)."""
    meter = CpuMeter(pid)
    out: dict = {"other_model": other, "embedding_model": EMBEDDING_MODEL}
    r = await client.post(
        s.base + "/v1/embeddings", json={"model": EMBEDDING_MODEL, "input": ["a tent for two", "a warm sleeping bag"]}
    )
    out["embeddings_status"] = r.status_code
    r = await client.post(
        s.base + "/v1/chat/completions",
        json={"model": other, "messages": user(WARMUP_PROMPT), "max_tokens": 32, "temperature": 0},
    )
    out["other_model_status"] = r.status_code
    await asyncio.sleep(2)  # both idle from here on
    out["models_loaded"] = (await client.get(s.base + "/healthz")).json().get("models_loaded")
    after = await clean_batch(
        f"fmstack after {EMBEDDING_MODEL} and {other} were used: {len(fresh.streams)} requests, 1 at a time",
        stream, requests_for(len(fresh.streams)), 1, args, pid,
    )
    before_tps, after_tps = fresh.decode_tps(), after.decode_tps()
    texts, after_texts = fresh.texts(), after.texts()
    out |= {
        "fresh": fresh.summary(),
        "after_use": after.summary(),
        "decode_tps_fresh": before_tps,
        "decode_tps_after_use": after_tps,
        "decode_ratio": after_tps / before_tps if before_tps and after_tps else None,
        "identical_text": sum(texts.get(p) == t for p, t in after_texts.items()),
        "prompts": len(after_texts),
        "differing": {p: {"fresh": texts.get(p), "after_use": t} for p, t in after_texts.items() if texts.get(p) != t},
        "foreign_cpu_share": meter.foreign_share(),
    }
    console.log(f"  after use: decode {after_tps or 0:.1f} tok/s vs {before_tps or 0:.1f} fresh")
    return out


async def scenario_prefix(stream: StreamFn, args: argparse.Namespace, pid: int) -> dict:
    """b. A ~1,000-token system prompt. Cold: conversations that share nothing but the template's first tokens,
    one at a time. Second turn: each conversation again with its answer and a follow-up (its history is cached).
    Burst: 8 requests with one system prompt at once, first cold and then again (other questions) once cached."""
    meter = CpuMeter(pid)
    k = args.conversations

    def system(i: int | None) -> Messages:  # a leading ticket number makes each conversation's prompt its own
        return [{"role": "system", "content": (f"Ticket #{4711 + i}.\n" if i is not None else "") + POLICY}]

    cold_requests = [(i, system(i) + user(POLICY_QUESTIONS[i % len(POLICY_QUESTIONS)])) for i in range(k)]
    cold = await clean_batch(f"prefix cache: {k} cold first turns, 1 at a time", stream, cold_requests, 1, args, pid)
    answers = {s.prompt: s.text for s in cold.streams if s.ok}
    second_requests = [
        (i, m + [{"role": "assistant", "content": answers[i]}] + user(FOLLOW_UP))
        for i, m in cold_requests
        if i in answers
    ]
    second = await clean_batch(f"prefix cache: {k} second turns, 1 at a time", stream, second_requests, 1, args, pid)
    n = max(args.levels)
    burst_cold = await clean_batch(
        f"prefix cache: {n} requests sharing the system prompt, at once (cold)",
        stream, [(i, system(None) + user(POLICY_QUESTIONS[i % 8])) for i in range(n)], n, args, pid,
    )
    burst_warm = await clean_batch(
        f"prefix cache: {n} more requests sharing the system prompt, at once (cached)",
        stream, [(i, system(None) + user(POLICY_QUESTIONS_B[i % 8])) for i in range(n)], n, args, pid,
    )

    def part(b: BatchResult) -> dict:
        return b.summary() | {
            "streams": [asdict(s) | {"text": None} for s in b.streams],
            "prompt_tokens_median": median([s.prompt_tokens for s in b.streams]),
            "cached_tokens_median": median([s.cached_tokens for s in b.streams]),
            "ttft_s_median": median([s.ttft for s in b.streams if s.ok]),
        }

    out = {
        "cold_first_turn": part(cold),
        "second_turn": part(second),
        "burst_cold": part(burst_cold),
        "burst_cached": part(burst_warm),
        "foreign_cpu_share": meter.foreign_share(),
    }
    c, t2 = out["cold_first_turn"]["ttft_s_median"], out["second_turn"]["ttft_s_median"]
    out["second_turn_ttft_ratio"] = t2 / c if c and t2 else None
    console.log(
        f"  TTFT cold {c or 0:.2f} s, second turn {t2 or 0:.2f} s "
        f"({out['second_turn']['cached_tokens_median'] or 0:.0f} of "
        f"{out['second_turn']['prompt_tokens_median'] or 0:.0f} prompt tokens cached); burst of {n}: p95 "
        f"{burst_cold.ttft(95) or 0:.2f} s cold, {burst_warm.ttft(95) or 0:.2f} s cached"
    )
    return out


async def scenario_rag(
    client: httpx.AsyncClient, stream: StreamFn, s: Server, label: str, args: argparse.Namespace, pid: int
) -> dict:
    """c. RAG answers quoting their context, one at a time (fmstack drafts only while few streams decode)."""
    requests = list(enumerate(rag_requests()[: args.rag_requests]))
    before = await speculation_counts(client, s)
    batch = await clean_batch(f"prompt lookup {label}: {len(requests)} RAG answers, 1 at a time",
                              stream, requests, 1, args, pid)
    await asyncio.sleep(1)  # metrics are recorded with the trace, just after the stream ends
    after = await speculation_counts(client, s)
    drafted, accepted = (after[i] - before[i] for i in range(2))
    return {
        "batch": batch,
        "decode_tps": batch.decode_tps(),
        "draft_tokens": drafted,
        "accepted_tokens": accepted,
        "foreign_cpu_share": batch.foreign_cpu,
    }


async def speculation_counts(client: httpx.AsyncClient, s: Server) -> tuple[float, float]:
    """fmstack's /metrics: prompt-lookup tokens drafted and accepted so far for `s.model`."""
    text = (await client.get(s.base + "/metrics")).text

    def counter(name: str) -> float:
        pattern = rf'^{name}_total\{{[^}}]*model="{re.escape(s.model)}"[^}}]*\}} ([0-9.e+-]+)$'
        return sum(float(m.group(1)) for m in re.finditer(pattern, text, re.M))

    return counter("fmstack_speculative_draft_tokens"), counter("fmstack_speculative_accepted_tokens")


def rag_summary(off: dict, on: dict) -> dict:
    texts_off, texts_on = off["batch"].texts(), on["batch"].texts()
    differing = sorted(p for p in texts_on if texts_off.get(p) != texts_on[p])
    speedup = on["decode_tps"] / off["decode_tps"] if on["decode_tps"] and off["decode_tps"] else None
    return {
        "off": {k: v for k, v in off.items() if k != "batch"} | {"batch": off["batch"].summary()},
        "on": {k: v for k, v in on.items() if k != "batch"} | {"batch": on["batch"].summary()},
        "texts_off": texts_off,
        "decode_speedup": speedup,
        "acceptance": on["accepted_tokens"] / on["draft_tokens"] if on["draft_tokens"] else None,
        "identical_text": len(texts_on) - len(differing),
        "prompts": len(texts_on),
        "differing_prompts": differing,
        "foreign_cpu_share": max(off["foreign_cpu_share"], on["foreign_cpu_share"]),
    }


# --------------------------------------------------------------------------------------------------- per model


async def bench_fmstack(
    model: str, other: str, home: Path, args: argparse.Namespace, run: Run, checkpoint: Callable[[], None]
) -> TargetResult:
    """fmstack's rows, then in the same process the prefix-cache and prompt-lookup-off scenarios, then the
    after-use scenario (last: it loads other models); then a second process with prompt lookup on."""
    s = fmstack_server(model, args, speculative=False)
    scenarios = run.models[model]["scenarios"]
    rag: dict[str, dict] = {}

    async def body(client, stream, pid):
        result = await measure(TargetResult(FMSTACK, command=s.cmd), stream, args.levels, args, pid)
        run.targets(model)[FMSTACK] = result
        checkpoint()
        if "prefix-cache" in args.scenarios:
            scenarios["prefix_cache"] = await guarded(scenario_prefix(stream, args, pid))
            checkpoint()
        if "prompt-lookup" in args.scenarios:
            rag["off"] = await guarded(scenario_rag(client, stream, s, "off", args, pid))
        if "after-use" in args.scenarios and (fresh := result.level(1)):
            scenarios["after_use"] = await guarded(scenario_after_use(client, stream, s, other, fresh, args, pid))
            checkpoint()
        return result

    result = await with_server(s, home, args, body)
    if "prompt-lookup" in args.scenarios:
        on_server = fmstack_server(model, args, speculative=True)

        async def rag_on(client, stream, pid):
            warm = await stream(-1, user(WARMUP_PROMPT))
            if not warm.ok:
                raise RuntimeError(f"warm-up request failed: {warm.error}")
            return await scenario_rag(client, stream, on_server, "on", args, pid)

        rag["on"] = await guarded(with_server(on_server, home, args, rag_on))
        if "error" in rag["off"] or "error" in rag["on"]:
            scenarios["prompt_lookup"] = {"error": rag["off"].get("error") or rag["on"].get("error")}
        else:
            scenarios["prompt_lookup"] = rag_summary(rag["off"], rag["on"])
            p = scenarios["prompt_lookup"]
            console.log(
                f"  prompt lookup: decode {rag['on']['decode_tps'] or 0:.1f} tok/s on vs "
                f"{rag['off']['decode_tps'] or 0:.1f} off, {p['identical_text']}/{p['prompts']} identical, "
                f"{rag['on']['accepted_tokens']:.0f} of {rag['on']['draft_tokens']:.0f} drafted tokens accepted"
            )
    return result


async def guarded(job: Awaitable) -> dict:
    """A scenario that fails is reported, not fatal."""
    try:
        return await job
    except Exception as exc:
        console.log(f"[red]scenario failed: {type(exc).__name__}: {exc}")
        return {"error": f"{type(exc).__name__}: {exc}"}


async def bench_model(
    model: str, path: Path, home: Path, args: argparse.Namespace, run: Run, checkpoint: Callable[[], None]
) -> None:
    run.models[model] = {"path": str(path), "targets": {}, "scenarios": {}}
    targets = run.targets(model)
    other = next(m for m in MODELS if m != model)
    jobs: list[tuple[str, Callable[[], Awaitable[TargetResult]]]] = [
        (DIRECT, lambda: bench_direct(path, args)),
        (LLAMA_PY, lambda: bench_server(llama_py_server(path, args), home, args)),
        (LLAMA_CPP, lambda: bench_server(llama_cpp_server(path, args), home, args)),
        (FMSTACK, lambda: bench_fmstack(model, other, home, args, run, checkpoint)),
    ]
    for name, job in jobs:
        if name not in args.targets:
            continue
        if name == LLAMA_CPP and not args.llama_server.is_file():
            reason = f"{args.llama_server} is not built (run `make bench-llama-server`)"
            console.log(f"[yellow]{model}: skipping {name}: {reason}")
            targets[name] = TargetResult(name, skipped=reason)
            continue
        console.rule(f"{model}: {name}")
        await wait_for_idle(args.wait_idle)
        try:
            targets[name] = await job()
        except Exception as exc:
            console.log(f"[red]{name} failed: {type(exc).__name__}: {exc}")
            targets[name] = TargetResult(name, error=f"{type(exc).__name__}: {exc}")
        checkpoint()


def model_paths(models: list[str]) -> dict[str, Path]:
    """The GGUFs fmstack's registry resolves (joining Qwen's chunk packages once, in the data dir)."""
    from fmstack.core.config import get_settings
    from fmstack.core.registry import Registry

    settings = get_settings()
    registry = Registry(settings)
    return {m: registry.get(m).local_path(settings).resolve() for m in models}


def write_registry(home: Path, paths: dict[str, Path]) -> None:
    """Point fmstack's model names at the resolved files in the temp home, so every target loads the same file."""
    (home / "models.toml").write_text(
        "".join(
            f'[models."{m}"]\nengine = "llamacpp"\nsource = "path:{p}"\ncontext_length = {N_CTX}\n\n'
            for m, p in paths.items()
        )
    )


# --------------------------------------------------------------------------------------------------- report


def identical_texts(targets: dict[str, TargetResult]) -> dict:
    """Greedy text per prompt at concurrency 1 against the first target that has it (llama.cpp direct), and each
    target's texts at higher concurrency against its own at concurrency 1."""
    ran = [t for t in targets.values() if t.level(1)]
    if not ran:
        return {}
    ref = ran[0]
    ref_texts = ref.level(1).texts()
    out: dict = {"reference": ref.name, "vs_reference": {}, "vs_own_first_text": {}}
    for t in ran:
        texts = t.level(1).texts()
        differ = {p: first_difference(ref_texts.get(p, ""), texts[p]) for p in texts if ref_texts.get(p) != texts[p]}
        if t is not ref:
            out["vs_reference"][t.name] = {
                "identical": len(texts) - len(differ),
                "prompts": len(texts),
                "first_difference_at_char": differ,
            }
        # the same prompt again at concurrency 1 (fmstack: its prompt then comes from the prefix cache), and at
        # higher concurrency (in a batch with other sequences)
        out["vs_own_first_text"][t.name] = {
            b.concurrency: sum(s.ok and s.text != texts.get(s.prompt) for s in b.streams) for b in t.levels
        }
    return out


def first_difference(a: str, b: str) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def goals(run: Run) -> list[dict]:
    """The issue's goals, as ratios measured side by side in this run (None where a side is missing)."""
    rows = []
    top = max(run.args.levels)

    def add(model: str, figure: str, value: float | None, goal: str, ok: bool | None) -> None:
        rows.append({"model": model, "figure": figure, "value": value, "goal": goal, "met": ok})

    for model, m in run.models.items():
        t, sc = m["targets"], m["scenarios"]

        def agg(name: str, t=t) -> float | None:
            b = t[name].level(top) if name in t else None
            return b.aggregate_tps if b and not b.failures else None

        fm, ll, cpp = agg(FMSTACK), agg(LLAMA_PY), agg(LLAMA_CPP)
        add(model, f"aggregate tok/s @{top}: fmstack / llama_cpp.server", fm / ll if fm and ll else None,
            ">= 2.5", fm / ll >= 2.5 if fm and ll else None)
        add(model, f"aggregate tok/s @{top}: fmstack / llama-server -np 8", fm / cpp if fm and cpp else None,
            ">= 0.9", fm / cpp >= 0.9 if fm and cpp else None)
        b = t[FMSTACK].level(top) if FMSTACK in t else None
        p95 = b.ttft(95) if b else None
        add(model, f"fmstack TTFT p95 @{top} (s)", p95, "<= 3 s", p95 <= 3 if p95 is not None else None)
        d_fm = t[FMSTACK].decode_tps() if FMSTACK in t else None
        d_direct = t[DIRECT].decode_tps() if DIRECT in t else None
        r = d_fm / d_direct if d_fm and d_direct else None
        add(model, "one-stream decode: fmstack / llama.cpp direct", r, ">= 0.95", r >= 0.95 if r else None)
        r = (sc.get("after_use") or {}).get("decode_ratio")
        add(model, "decode after embeddings + other model / fresh", r, ">= 0.95", r >= 0.95 if r else None)
        r = (sc.get("prefix_cache") or {}).get("second_turn_ttft_ratio")
        add(model, "second-turn TTFT / cold TTFT (1,000-token prompt)", r, "<= 0.2", r <= 0.2 if r else None)
        pl = sc.get("prompt_lookup") or {}
        r = pl.get("decode_speedup")
        same = pl.get("identical_text") == pl.get("prompts") if pl.get("prompts") else None
        add(model, "prompt lookup decode on / off (RAG quoting)", r, ">= 1.3, identical text",
            (r >= 1.3 and bool(same)) if r else None)
    return rows


def fmt(v: float | None, spec: str = ".1f", unit: str = "") -> str:
    return "-" if v is None else f"{v:{spec}}{unit}"


def print_report(run: Run) -> None:
    out = Console(width=max(Console().width, 150))
    levels = run.args.levels
    for model, m in run.models.items():
        table = Table(title=f"{model}: {run.args.requests} requests x {run.args.max_tokens} tokens, greedy, "
                      f"{run.args.threads} threads (per level: aggregate tok/s, TTFT p50 / p95)")
        for col in ("target", "decode tok/s\n1 stream", *(f"@{c}" for c in levels), "failed", "same text", "other CPU"):
            table.add_column(col, justify="left" if col == "target" else "right")
        same = identical_texts(m["targets"])
        for name in TARGETS:
            t = m["targets"].get(name)
            if t is None:
                continue
            if t.error or t.skipped:
                color = "red" if t.error else "yellow"
                table.add_row(name, f"[{color}]{(t.error or t.skipped)[:90]}", *[""] * (len(levels) + 3))
                continue
            cells = []
            for c in levels:
                b = t.level(c)
                cells.append(f"{b.aggregate_tps:.1f}\n{fmt(b.ttft(50), '.2f')} / {fmt(b.ttft(95), '.2f')} s" if b
                             else "-")
            vs = same.get("vs_reference", {}).get(name)
            table.add_row(
                name,
                fmt(t.decode_tps()),
                *cells,
                str(sum(b.failures for b in t.levels)),
                f"{vs['identical']}/{vs['prompts']}" if vs else "ref",
                f"{100 * t.foreign_cpu:.0f} %",
            )
        out.print(table)
        for name, per_level in same.get("vs_own_first_text", {}).items():
            if any(per_level.values()):
                out.print(f"  {name}: streams whose text differs from its first text for the prompt, by concurrency: "
                          f"{per_level}")
        print_scenarios(out, model, m["scenarios"])
    table = Table(title="Goals (issue 11), measured side by side in this run")
    for col in ("model", "figure", "value", "goal", "met"):
        table.add_column(col)
    for g in goals(run):
        met = {True: "[green]yes", False: "[red]no", None: "-"}[g["met"]]
        table.add_row(g["model"], g["figure"], fmt(g["value"], ".2f"), g["goal"], met)
    out.print(table)
    share = run.foreign_cpu()
    if share > FOREIGN_CPU_WARN:
        out.print(f"[yellow]Other processes took up to {100 * share:.0f} % of the CPU during this run: its numbers "
                  "are pessimistic and its ratios unreliable. Rerun on an idle machine (or with --wait-idle 600).")


def print_scenarios(out: Console, model: str, sc: dict) -> None:
    if not sc:
        return
    lines = [f"[bold]{model}: fmstack scenarios"]
    a = sc.get("after_use")
    if a and "error" not in a:
        lines.append(f"  a. after {a['embedding_model']} and {a['other_model']} were used (idle): decode "
                     f"{fmt(a['decode_tps_after_use'])} tok/s vs {fmt(a['decode_tps_fresh'])} fresh "
                     f"({fmt(a['decode_ratio'], '.2f')}x), {a['identical_text']}/{a['prompts']} same text")
    b = sc.get("prefix_cache")
    if b and "error" not in b:
        c, s2, bc, bw = b["cold_first_turn"], b["second_turn"], b["burst_cold"], b["burst_cached"]
        lines.append(
            f"  b. {fmt(c['prompt_tokens_median'], '.0f')}-token prompt: TTFT cold {fmt(c['ttft_s_median'], '.2f')} s,"
            f" second turn {fmt(s2['ttft_s_median'], '.2f')} s ({fmt(b['second_turn_ttft_ratio'], '.2f')}x,"
            f" {fmt(s2['cached_tokens_median'], '.0f')} tokens cached); {bc['requests']} at once sharing it: TTFT"
            f" p50/p95 {fmt(bc['ttft_s_p50'], '.2f')}/{fmt(bc['ttft_s_p95'], '.2f')} s cold,"
            f" {fmt(bw['ttft_s_p50'], '.2f')}/{fmt(bw['ttft_s_p95'], '.2f')} s cached"
        )
    p = sc.get("prompt_lookup")
    if p and "error" not in p:
        lines.append(f"  c. prompt lookup on RAG answers: decode {fmt(p['on']['decode_tps'])} tok/s on vs "
                     f"{fmt(p['off']['decode_tps'])} off ({fmt(p['decode_speedup'], '.2f')}x), acceptance "
                     f"{fmt(p['acceptance'], '.0%')}, {p['identical_text']}/{p['prompts']} identical greedy text")
    for key, s in sc.items():
        if "error" in s:
            lines.append(f"  [red]{key}: {s['error']}")
    out.print("\n".join(lines))


def plot(run: Run, path: Path) -> None:
    """Per model: aggregate tok/s against concurrency, and TTFT p95 against concurrency, per target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [m for m in run.models if any(t.levels for t in run.targets(m).values())]
    if not models:
        return
    levels = list(run.args.levels)
    fig, axes = plt.subplots(len(models), 2, figsize=(12, 4.2 * len(models)), squeeze=False)
    for (ax1, ax2), model in zip(axes, models, strict=True):
        for name, t in run.targets(model).items():
            if not t.levels:
                continue
            color = COLORS[name]
            if name == DIRECT:  # one stream only: the ceiling of a single stream
                ax1.axhline(t.levels[0].aggregate_tps, color=color, ls="--", label=f"{name} (1 stream)")
                continue
            xs = [b.concurrency for b in t.levels]
            ax1.plot(xs, [b.aggregate_tps for b in t.levels], marker="o", color=color, label=name)
            ax2.plot(xs, [b.ttft(95) or 0 for b in t.levels], marker="o", color=color, label=name)
            for b in t.levels:
                if b.failures:
                    ax1.annotate(f"{b.failures} failed", (b.concurrency, b.aggregate_tps), color="red")
        ax1.set(title=f"{model}: aggregate output tok/s", xlabel="concurrent streams", ylabel="tokens/s",
                xticks=levels)
        ax1.set_ylim(bottom=0)
        ax2.set(title=f"{model}: TTFT p95", xlabel="concurrent streams", ylabel="seconds", xticks=levels)
        ax2.axhline(3, color="#999", lw=0.8, ls=":")
        ax2.set_ylim(bottom=0)
        for ax in (ax1, ax2):
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
    info = run.info
    share = run.foreign_cpu()
    busy = f", other processes took up to {100 * share:.0f} % of the CPU" if share > FOREIGN_CPU_WARN else ""
    fig.suptitle(f"{info['requests']} requests x {info['max_tokens']} tokens per level, greedy, {info['threads']} "
                 f"threads, {info['cpu_count']} CPUs, llama-cpp-python {info['llama_cpp_python']}{busy}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def machine_info(args: argparse.Namespace) -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
               platform.processor())
    from fmstack.core.config import Settings

    defaults = Settings()
    return {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "llama_cpp_python": importlib.metadata.version("llama-cpp-python"),
        "fmstack": importlib.metadata.version("fmstack"),
        "llama_server": str(args.llama_server) if args.llama_server.is_file() else None,
        "threads": args.threads,
        "max_tokens": args.max_tokens,
        "requests": args.requests,
        "concurrency": list(args.levels),
        "quick": args.quick,
        "fmstack_settings": {"FMSTACK_PARALLEL": defaults.parallel, "FMSTACK_KV_TOKENS": defaults.kv_tokens,
                             "FMSTACK_QUEUE_SIZE": defaults.queue_size},
        "loadavg_at_start": os.getloadavg(),  # anything else running on the CPU skews every number
    }


def save(run: Run, path: Path, complete: bool) -> None:
    share = run.foreign_cpu()
    data = {
        "complete": complete,
        "machine": run.info,
        # the share of the machine's CPU other processes took, worst batch; above 5 % the numbers are unreliable
        "foreign_cpu_share_max": share,
        "busy_machine": share > FOREIGN_CPU_WARN,
        "prompts": PROMPTS,
        "goals": goals(run),
        "models": {
            model: {
                "path": m["path"],
                "targets": {name: t.to_json() for name, t in m["targets"].items()},
                "identical_text": identical_texts(m["targets"]),
                "scenarios": m["scenarios"],
            }
            for model, m in run.models.items()
        },
    }
    path.write_text(json.dumps(data, indent=1, default=str))


# --------------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke run: SmolLM2 only, concurrency 1 and 8, 8 requests x 32 tokens, smaller scenarios")
    p.add_argument("--models", nargs="+", choices=MODELS, help="models to run (default: both; --quick: SmolLM2)")
    p.add_argument("--targets", nargs="+", choices=TARGETS, default=list(TARGETS), help="targets to run (default: all)")
    p.add_argument("--scenarios", nargs="*", choices=SCENARIOS, default=list(SCENARIOS),
                   help="fmstack scenarios to run after its rows (default: all; none: --scenarios with no name)")
    p.add_argument("--max-tokens", type=int, help="max_tokens of every request (default 128; --quick 32)")
    p.add_argument("--requests", type=int, help="requests per concurrency level (default 16; --quick 8)")
    p.add_argument("--threads", type=int, default=2, help="llama.cpp threads for every target (default 2)")
    p.add_argument("--llama-server", type=Path, default=LLAMA_SERVER,
                   help=f"llama.cpp's server binary (default {LLAMA_SERVER}, built by `make bench-llama-server`)")
    p.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS",
                   help="on a shared machine: before each target, and to redo a batch others disturbed, wait up to "
                   "this long for other processes to leave the CPU (default 0: measure at once, only flag)")
    p.add_argument("--out", type=Path, default=RESULTS, help="directory for the JSON and the plot")
    args = p.parse_args(argv)
    args.models = args.models or ([MODELS[0]] if args.quick else list(MODELS))
    args.max_tokens = args.max_tokens or (32 if args.quick else 128)
    args.requests = args.requests or (8 if args.quick else 16)
    args.levels = (1, 8) if args.quick else (1, 2, 4, 8)
    args.conversations = 4 if args.quick else 8  # scenario b
    args.rag_requests = 4 if args.quick else 8  # scenario c
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind, so the servers get stopped
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "serve-quick" if args.quick else "serve"
    json_path, png_path = args.out / f"{stem}.json", args.out / f"{stem}.png"
    run = Run(args, machine_info(args))
    started = time.monotonic()
    # SmolLM2 is served by every target; the scenarios' "other chat model" needs Qwen's file too
    with console.status("resolving the models' GGUF files (Qwen's chunks are joined once)"):
        paths = model_paths(list(MODELS) if "after-use" in args.scenarios and FMSTACK in args.targets else args.models)

    def checkpoint() -> None:
        save(run, json_path, complete=False)

    with tempfile.TemporaryDirectory(prefix="fmstack-bench-") as tmp:
        home = Path(tmp)
        write_registry(home, paths)
        for model in args.models:
            asyncio.run(bench_model(model, paths[model], home, args, run, checkpoint))
    run.info["loadavg_at_end"] = os.getloadavg()
    run.info["duration_s"] = round(time.monotonic() - started)
    print_report(run)
    save(run, json_path, complete=True)
    plot(run, png_path)
    console.log(f"wrote {json_path} and {png_path}")
    failed = any(t.error for m in run.models.values() for t in m["targets"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

