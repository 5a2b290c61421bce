"""Model-based rerankers: a second stage that scores each of the best fused candidates against the question.

- `llm`: the local chat model, pointwise: "Does this passage answer the question? yes or no", one token generated
  with its log-probabilities, score = P(yes) / (P(yes) + P(no)). Always available (any chat model of the registry);
  the candidates go through the gateway concurrently (traced as `rag.rerank` calls of app fmstack-rag), so the
  llama.cpp engine decodes them as one batch and shares the prompt prefix (instructions + question) between them.
- `cross-encoder`: a MiniLM cross-encoder trained on the collection's synthetic (question, passage) pairs by
  `fmstack rag tune --cross-encoder`, or any sentence-transformers CrossEncoder folder named in the collection's
  config (`cross_encoder`).

What each costs and buys (MRR, p95 latency for 20 candidates) is measured by benchmarks/rag.py.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path

from fmstack.app.rag.collections import index_dir
from fmstack.core.errors import InvalidRequest
from fmstack.core.store.schema import RagCollection
from fmstack.engines.base import GenerationRequest
from fmstack.engines.compute import COMPUTE
from fmstack.gateway import CallContext, Gateway

Scorer = Callable[[str, list[str]], list[float]]  # (question, passages) -> a relevance score per passage
APP = "fmstack-rag"

JUDGE_SYSTEM = "You judge search results. Reply with one word: yes or no."
JUDGE_USER = "Question: {question}\n\nPassage:\n{passage}\n\nDoes the passage answer the question? Reply yes or no."


def yes_probability(top: list[tuple[str, float]]) -> float | None:
    """P(yes) / (P(yes) + P(no)) from a token's most likely alternatives, None when neither word is among them."""
    yes = sum(math.exp(lp) for token, lp in top if token.strip().lower() == "yes")
    no = sum(math.exp(lp) for token, lp in top if token.strip().lower() == "no")
    return yes / (yes + no) if yes + no > 0 else None


class LlmScorer:
    """Pointwise yes/no relevance by a chat model, the candidates of one question scored concurrently."""

    def __init__(self, gateway: Gateway, model: str):
        self.gateway = gateway
        self.model = model
        settings = gateway.settings
        self.concurrency = max(1, min(settings.parallel, settings.queue_size // 2))

    def __call__(self, question: str, passages: list[str]) -> list[float]:
        return asyncio.run(self.score(question, passages))

    async def score(self, question: str, passages: list[str]) -> list[float]:
        gate = asyncio.Semaphore(self.concurrency)

        async def one(passage: str) -> float:
            async with gate:
                return await self._judge(question, passage)

        return list(await asyncio.gather(*(one(p) for p in passages)))

    async def _judge(self, question: str, passage: str) -> float:
        messages = [
            {"role": "system", "content": JUDGE_SYSTEM},
            {"role": "user", "content": JUDGE_USER.format(question=question, passage=passage)},
        ]
        request = GenerationRequest(messages=messages, max_tokens=1, temperature=0, logprobs=True, top_logprobs=20)
        call = self.gateway.call("rag.rerank", "rerank", {"model": self.model, "max_tokens": 1}, CallContext(APP))
        deltas = await self.gateway.stream(call, self.model, request)
        top: list[tuple[str, float]] = []
        async for delta in deltas:
            for chosen, alternatives in delta.logprobs[:1]:
                top = [(t.token, t.logprob) for t in alternatives] or [(chosen.token, chosen.logprob)]
        p = yes_probability(top)
        if p is None:
            raise InvalidRequest(
                f"Model '{self.model}' cannot score relevance: it gave neither 'yes' nor 'no' among its likeliest "
                "tokens (or returned no log-probabilities). Rerank with another chat model (--rerank-model).",
                param="rerank_model",
            )
        return p


class CrossEncoderScorer:
    """A sentence-transformers CrossEncoder folder: one forward pass per (question, passage) pair, batched."""

    def __init__(self, path: Path):
        from sentence_transformers import CrossEncoder

        if not (path / "config.json").is_file():
            raise InvalidRequest(f"No cross-encoder at {path}: train one with `fmstack rag tune --cross-encoder`.")
        self.model = CrossEncoder(str(path), device="cpu", local_files_only=True)
        self._lock = threading.Lock()

    def __call__(self, question: str, passages: list[str]) -> list[float]:
        with self._lock:
            pairs = [(question, p) for p in passages]  # torch on the compute thread (engines/compute.py)
            scores = COMPUTE.call(partial(self.model.predict, pairs, batch_size=32, convert_to_numpy=True))
        return [float(s) for s in scores]


_CROSS_ENCODERS: dict[str, CrossEncoderScorer] = {}
_LOCK = threading.Lock()


def cross_encoder_path(rag, collection: RagCollection) -> Path:
    """The collection's cross-encoder: the one named in its config, else the one `tune --cross-encoder` trained."""
    named = (collection.config or {}).get("cross_encoder")
    return Path(named) if named else index_dir(rag.settings.home, collection) / "cross-encoder"


def forget_cross_encoder(path: Path) -> None:
    """Drop a loaded cross-encoder whose folder was just retrained, so the next rerank loads the new one."""
    with _LOCK:
        _CROSS_ENCODERS.pop(str(path), None)


def make_scorer(rag, rerank: str, collection: RagCollection, model: str | None) -> Scorer | None:
    """The scorer for a model-based `rerank`, None for the others."""
    if rerank == "llm":
        return LlmScorer(rag.chat_gateway(), model or rag.settings.default_model)
    if rerank == "cross-encoder":
        path = str(cross_encoder_path(rag, collection))
        with _LOCK:
            if path not in _CROSS_ENCODERS:
                _CROSS_ENCODERS[path] = CrossEncoderScorer(Path(path))
            return _CROSS_ENCODERS[path]
    return None
