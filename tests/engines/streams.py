"""Driving an engine directly, as the batching tests of both local engines do: one request's whole stream, several
requests one after another (each alone) or all at once (in one batch)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from fmstack.engines.base import Delta, Engine, Finish, GenerationRequest


@dataclass
class Result:
    text: str
    finish: Finish
    logprobs: list  # (TopLogprob, [TopLogprob]) per token, when asked for


async def collect(engine: Engine, request: GenerationRequest) -> Result:
    parts, logprobs, finish = [], [], None
    async for event in engine.stream(engine.prepare(request)):
        if isinstance(event, Delta):
            parts.append(event.text)
            logprobs += event.logprobs
        else:
            finish = event
    return Result("".join(parts), finish, logprobs)


def alone(engine: Engine, requests: list[GenerationRequest]) -> list[Result]:
    async def go():
        return [await collect(engine, r) for r in requests]

    return asyncio.run(go())


def together(engine: Engine, requests: list[GenerationRequest]) -> list[Result]:
    async def go():
        return await asyncio.gather(*(collect(engine, r) for r in requests))

    return asyncio.run(go())


def chat(question: str, **params) -> GenerationRequest:
    return GenerationRequest(messages=[{"role": "user", "content": question}], **params)
