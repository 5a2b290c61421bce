"""Where a suite's answers come from: fmstack's engines in this process, or any OpenAI-compatible URL."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import openai

from fmstack.core.errors import FmstackError
from fmstack.core.registry import Registry
from fmstack.gateway import CallContext, Gateway, generation_request


@dataclass
class Generated:
    text: str
    latency_ms: float
    prompt_tokens: int
    completion_tokens: int
    cost: float


class Generator(Protocol):
    async def generate(self, model: str, messages: list[dict], params: dict, run_id: str | None = None) -> Generated:
        """`run_id`: the eval run asking, recorded with the generation where the generator can."""
        ...


class LocalGenerator:
    """fmstack's engines in this process, through the gateway: every generation (judges' too) is a trace carrying
    the eval run's id. How generations share the cores is the engines' scheduling, not this class's."""

    def __init__(self, gateway: Gateway):
        self.gateway = gateway

    async def generate(self, model: str, messages: list[dict], params: dict, run_id: str | None = None) -> Generated:
        context = CallContext(app="fmstack-eval", eval_run_id=run_id)
        answer = await self.gateway.complete(model, generation_request(messages, params), context, "eval.generate")
        return Generated(
            answer.text, answer.latency_ms, answer.prompt_tokens, answer.completion_tokens, answer.cost
        )


class RemoteGenerator:
    """Any OpenAI-compatible endpoint (`--base-url`): a running fmstack, vLLM, llama.cpp server, OpenAI."""

    def __init__(self, base_url: str, api_key: str, registry: Registry, timeout: float = 300):
        self.client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=2)
        self.registry = registry

    async def generate(self, model: str, messages: list[dict], params: dict, run_id: str | None = None) -> Generated:
        start = time.perf_counter()
        headers = {"X-Fmstack-App": "fmstack-eval"} | ({"X-Fmstack-Eval-Run": run_id} if run_id else {})
        try:
            r = await self.client.chat.completions.create(
                model=model, messages=messages, extra_headers=headers, **params
            )
        except openai.APIError as exc:
            raise FmstackError(f"{type(exc).__name__}: {exc}") from exc
        usage = r.usage
        p, c = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
        cost = self.registry.specs[model].cost(p, c) if model in self.registry.specs else 0.0
        return Generated(r.choices[0].message.content or "", (time.perf_counter() - start) * 1000, p, c, cost)
