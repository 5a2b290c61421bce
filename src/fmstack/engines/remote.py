"""A remote OpenAI-compatible endpoint as an engine: models used as a service get the same traces, metrics and
cost accounting as local ones. The API key comes from the environment variable the registry entry names.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import openai

from fmstack.core.errors import EngineError, FmstackError, QueueFull
from fmstack.core.registry import ModelSpec
from fmstack.engines.base import (
    Delta,
    Engine,
    Event,
    Finish,
    GenerationRequest,
    Prepared,
    TopLogprob,
    validate_messages,
)


class RemoteEngine(Engine):
    def __init__(self, spec: ModelSpec, timeout: float):
        self.spec = spec
        key = os.environ.get(spec.api_key_env or "", "") or "none"
        self.client = openai.AsyncOpenAI(base_url=spec.base_url, api_key=key, timeout=timeout, max_retries=1)

    def prepare(self, request: GenerationRequest) -> Prepared:
        """The remote validates context length itself; its 4xx come back to the caller with their status."""
        if request.messages is not None:
            validate_messages(request.messages)
        return Prepared(request, request.prompt or "", 0, request.max_tokens or 0)

    def stream(self, prepared: Prepared) -> AsyncIterator[Event]:
        return self._stream(prepared)

    def close(self) -> None:
        """The HTTP client's connections close with the process."""

    async def _stream(self, p: Prepared) -> AsyncIterator[Event]:
        r = p.request
        params = dict(
            model=self.spec.remote_model or self.spec.name,
            max_tokens=r.max_tokens,
            temperature=r.temperature,
            top_p=r.top_p,
            stop=r.stop or None,
            seed=r.seed,
            logit_bias={str(t): b for t, b in r.logit_bias.items()} or None,
            stream=True,
        )
        params = {k: v for k, v in params.items() if v is not None}
        try:
            if r.messages is not None:
                extra = dict(stream_options={"include_usage": True})
                if r.response_format:
                    extra["response_format"] = r.response_format
                if r.logprobs:
                    extra |= dict(logprobs=True, top_logprobs=r.top_logprobs)
                chunks = await self.client.chat.completions.create(messages=r.messages, **params, **extra)
            else:
                chunks = await self.client.completions.create(
                    prompt=p.prompt, stream_options={"include_usage": True}, **params
                )
            reason, usage = "stop", None
            async for chunk in chunks:
                usage = chunk.usage or usage
                for choice in chunk.choices:
                    reason = choice.finish_reason or reason
                    if text := _text(choice):
                        yield Delta(text, _logprobs(choice))
            yield Finish(reason, usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0)
        except openai.RateLimitError as exc:
            raise QueueFull(self.spec.name) from exc
        except openai.APIStatusError as exc:
            if 400 <= exc.status_code < 500:
                raise _remote_user_error(self.spec.name, exc) from exc
            raise EngineError(f"Remote model '{self.spec.name}' answered {exc.status_code}: {exc.message}") from exc
        except openai.APIError as exc:
            raise EngineError(f"Remote model '{self.spec.name}' at {self.spec.base_url} failed: {exc}") from exc


def _remote_user_error(model: str, exc: openai.APIStatusError) -> FmstackError:
    """The remote refused the request as the user's mistake: pass its status, message, param and code on."""
    body = exc.body.get("error", exc.body) if isinstance(exc.body, dict) else {}
    error = FmstackError(
        f"Remote model '{model}': {body.get('message') or exc.message}", param=body.get("param"), code=body.get("code")
    )
    error.status = exc.status_code
    return error


def _text(choice) -> str:
    delta = getattr(choice, "delta", None)
    return (delta.content or "") if delta is not None else (choice.text or "")


def _logprobs(choice) -> list:
    content = getattr(getattr(choice, "logprobs", None), "content", None) or []
    return [
        (
            TopLogprob(t.token, t.logprob, t.bytes or []),
            [TopLogprob(x.token, x.logprob, x.bytes or []) for x in t.top_logprobs],
        )
        for t in content
    ]
