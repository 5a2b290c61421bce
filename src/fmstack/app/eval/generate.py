"""Where a suite's answers come from: fmstack's engines in this process, or any OpenAI-compatible URL."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Protocol

import openai

from fmstack.engines.base import Delta, Finish, GenerationRequest
from fmstack.engines.pool import EnginePool
from fmstack.core.errors import FmstackError
from fmstack.core.registry import Registry

GENERATION_PARAMS = {"temperature", "top_p", "max_tokens", "stop", "seed", "response_format"}


@dataclass
class Generated:
    text: str
    latency_ms: float
    prompt_tokens: int
    completion_tokens: int
    cost: float


class Generator(Protocol):
    async def generate(self, model: str, messages: list[dict], params: dict) -> Generated: ...


class LocalGenerator:
    """fmstack's engines, loaded in this process.

    Local models share this machine's cores, so generations run one at a time: two models decoding at once
    oversubscribe the CPU (each slower than both in turn), and a request waiting in a queue would count its wait
    as the model's latency. Concurrency still overlaps scoring, judging and I/O with generation.
    """

    def __init__(self, pool: EnginePool):
        self.pool = pool
        self._cpu = asyncio.Lock()

    async def generate(self, model: str, messages: list[dict], params: dict) -> Generated:
        engine = await asyncio.to_thread(self.pool.chat, model)
        if self.pool.registry.get(model).engine == "transformers":
            params = {k: v for k, v in params.items() if k != "response_format"}  # no grammar: judges parse + retry
        async with self._cpu:
            return await self._generate(engine, model, messages, params)

    async def _generate(self, engine, model: str, messages: list[dict], params: dict) -> Generated:
        start = time.perf_counter()
        stop = params.get("stop")
        request = GenerationRequest(
            messages=messages,
            **{k: v for k, v in params.items() if k != "stop"},
            stop=[stop] if isinstance(stop, str) else list(stop or []),
        )
        parts, finish = [], None
        async for event in engine.stream(engine.prepare(request)):
            if isinstance(event, Delta):
                parts.append(event.text)
            elif isinstance(event, Finish):
                finish = event
        spec = self.pool.registry.get(model)
        p, c = (finish.prompt_tokens, finish.completion_tokens) if finish else (0, 0)
        return Generated("".join(parts), (time.perf_counter() - start) * 1000, p, c, spec.cost(p, c))


class RemoteGenerator:
    """Any OpenAI-compatible endpoint (`--base-url`): a running fmstack, vLLM, llama.cpp server, OpenAI."""

    def __init__(self, base_url: str, api_key: str, registry: Registry, timeout: float = 300):
        self.client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=2)
        self.registry = registry

    async def generate(self, model: str, messages: list[dict], params: dict) -> Generated:
        start = time.perf_counter()
        try:
            r = await self.client.chat.completions.create(model=model, messages=messages, **params)
        except openai.APIError as exc:
            raise FmstackError(f"{type(exc).__name__}: {exc}") from exc
        usage = r.usage
        p, c = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
        cost = self.registry.specs[model].cost(p, c) if model in self.registry.specs else 0.0
        return Generated(r.choices[0].message.content or "", (time.perf_counter() - start) * 1000, p, c, cost)
