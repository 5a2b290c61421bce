"""Request bodies of the OpenAI-compatible API, validated by pydantic (and documented in /openapi.json).

Unknown fields are accepted and ignored, as OpenAI clients send fields we do not use.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fmstack.core.errors import InvalidRequest
from fmstack.engines.base import GenerationRequest
from fmstack.engines.messages import Message


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    logit_bias: dict[str, float] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=128, description="Choices to generate, each its own sequence (at most the queue size).")
    user: str | None = None
    speculative: bool | None = Field(
        None, description="fmstack: prompt-lookup drafts on or off for this request (default FMSTACK_SPECULATIVE)"
    )

    @field_validator("stop")
    @classmethod
    def _at_most_four(cls, v):
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop sequences")
        return v

    @field_validator("logit_bias")
    @classmethod
    def _token_ids_and_bounds(cls, v):
        for key, bias in (v or {}).items():
            if not key.lstrip("-").isdigit() or int(key) < 0:
                raise ValueError(f"logit_bias keys are token ids; {key!r} is not one")
            if not -100 <= bias <= 100:
                raise ValueError(f"logit_bias values must be between -100 and 100; token {key} has {bias}")
        return v

    def biases(self) -> dict[int, float]:
        return {int(k): float(b) for k, b in (self.logit_bias or {}).items()}

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_Sampling):
    messages: list[Message]
    max_completion_tokens: int | None = Field(None, ge=1)
    response_format: dict[str, Any] | None = None
    logprobs: bool = False
    top_logprobs: int = Field(0, ge=0, le=20)
    tools: list[dict[str, Any]] | None = Field(None, description='[{"type": "function", "function": {...}}]')
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool = True

    def to_generation(self) -> GenerationRequest:
        if self.top_logprobs and not self.logprobs:
            raise InvalidRequest("top_logprobs needs logprobs: true.", param="top_logprobs")
        return GenerationRequest(
            messages=[m.as_template_input() for m in self.messages],
            max_tokens=self.max_completion_tokens or self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=self.stops(),
            seed=self.seed,
            logit_bias=self.biases(),
            response_format=self.response_format,
            logprobs=self.logprobs,
            top_logprobs=self.top_logprobs,
            tools=self.tools,
            tool_choice=self.tool_choice,
            parallel_tool_calls=self.parallel_tool_calls,
            speculative=self.speculative,
        )

    @property
    def with_tools(self) -> bool:
        """Whether the answer may hold tool calls (then the response parses them out of the text)."""
        return bool(self.tools) and self.tool_choice != "none"


class CompletionRequest(_Sampling):
    prompt: str | list[str]
    max_tokens: int | None = Field(16, ge=0, description="0 with `echo`: the prompt only (with `logprobs`, scored)")
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = Field(False, description="Put the prompt before the answer (and with `logprobs`, score its tokens)")
    suffix: str | None = Field(None, description="Not supported (fill-in-the-middle): refused with a 400")

    @property
    def text(self) -> str:
        """The one prompt (a list must hold exactly one)."""
        return self.prompt[0] if isinstance(self.prompt, list) else self.prompt

    def to_generation(self) -> GenerationRequest:
        if isinstance(self.prompt, list) and len(self.prompt) != 1:
            raise InvalidRequest("Send one prompt per request.", param="prompt")
        if self.suffix:
            raise InvalidRequest("suffix (fill-in-the-middle) is not supported; send the prompt only.", param="suffix")
        if self.max_tokens == 0 and not self.echo:
            raise InvalidRequest("max_tokens 0 generates nothing: it needs echo (the prompt back).", param="max_tokens")
        return GenerationRequest(
            prompt=self.text,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=self.stops(),
            seed=self.seed,
            logit_bias=self.biases(),
            logprobs=self.logprobs is not None,
            top_logprobs=self.logprobs or 0,
            prompt_logprobs=self.echo and self.logprobs is not None,
            speculative=self.speculative,
        )


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None

    def texts(self) -> list[str]:
        texts = [self.input] if isinstance(self.input, str) else self.input
        if not texts:
            raise InvalidRequest("'input' must not be empty.", param="input")
        if any(not t for t in texts):
            raise InvalidRequest("Every input must be a non-empty string.", param="input")
        return texts


class FeedbackRequest(BaseModel):
    trace_id: str = Field(description="The `id` of the completion being judged")
    rating: Literal[1, -1] | None = None
    correction: str | None = Field(None, description="A better answer, in the user's words")
    comment: str | None = None
