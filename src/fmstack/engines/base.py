"""The one interface every engine offers: prepare a request, then stream its tokens.

`prepare` does everything that can fail because of the user's input (rendering the chat template, counting
tokens, checking the context, capping max_tokens) before anything is queued, so such failures are 400s and not
errors in the middle of a stream.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fmstack.core.errors import ContextLengthExceeded, InvalidRequest
from fmstack.core.registry import ModelSpec


@dataclass
class GenerationRequest:
    """A chat (`messages`) or completion (`prompt`) request, with OpenAI's sampling parameters."""

    messages: list[dict] | None = None
    prompt: str | None = None
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    logit_bias: dict[int, float] = field(default_factory=dict)  # token id -> added to its logit, as OpenAI's
    response_format: dict | None = None
    logprobs: bool = False
    top_logprobs: int = 0
    speculative: bool | None = None  # prompt-lookup drafts (llama.cpp engine); None: the engine's default
    tools: list[dict] | None = None  # OpenAI's function tools; see engines/tools.py
    tool_choice: str | dict | None = None  # none | auto | required | {"type": "function", "function": {"name"}}
    parallel_tool_calls: bool = True
    # the log-probability of every prompt token (a completion's `echo` with `logprobs`: how eval harnesses score
    # choices), `top_logprobs` alternatives each; only engines with `Engine.scores_prompts`
    prompt_logprobs: bool = False


@dataclass
class Prepared:
    """A validated request: the prompt as the model sees it, its token count and the tokens it may add."""

    request: GenerationRequest
    prompt: str
    prompt_tokens: int
    max_tokens: int
    tokens: list[int] = field(default_factory=list)
    constraint: object = None  # engine-specific, built once in prepare (llama.cpp: the JSON grammar)
    preserve: frozenset[int] = frozenset()  # special tokens whose text belongs in the answer (tool-call tags)


@dataclass
class TopLogprob:
    token: str
    logprob: float | None  # None only for a prompt's first token: nothing before it predicts it
    bytes: list[int]


@dataclass
class Delta:
    """A piece of generated text; `logprobs` holds one entry per token in it when they were asked for."""

    text: str
    logprobs: list[tuple[TopLogprob, list[TopLogprob]]] = field(default_factory=list)
    tokens: int = 1  # generated tokens this text covers, so a stream cut short still knows its usage
    index: int = 0  # which choice of an `n` > 1 request it belongs to (set by the gateway)
    prompt: bool = False  # the prompt's log-probabilities (`prompt_logprobs`), one entry per prompt token; no text


@dataclass
class Finish:
    """The last event of every stream."""

    reason: str  # "stop" | "length"
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0  # prompt tokens whose KV cells came from the prefix cache (not prefilled)
    draft_tokens: int = 0  # tokens drafted by prompt lookup and verified by the model
    accepted_tokens: int = 0  # of those, the ones kept
    index: int = 0  # which choice of an `n` > 1 request it ends


Event = Delta | Finish


class Engine(ABC):
    """A loaded model. Local engines put a `jobs.JobQueue` and a worker thread between callers and the model;
    remote ones do not."""

    spec: ModelSpec
    scores_prompts = False  # whether it answers `prompt_logprobs` (the llama.cpp engine does)
    calls_tools = False  # whether it offers `tools` to the model and constrains its calls (the llama.cpp engine does)

    @property
    def context_length(self) -> int:
        return self.spec.context_length

    @abstractmethod
    def prepare(self, request: GenerationRequest) -> Prepared:
        """Validate and render the request; raise `FmstackError` for anything the user must fix."""

    @abstractmethod
    def stream(self, prepared: Prepared) -> AsyncIterator[Event]:
        """Start generating (raising `QueueFull` at once if it cannot be queued) and return the token stream.

        Closing the iterator (a client gone, a timeout) stops the generation.
        """

    def queue_depth(self) -> int:
        return 0

    @abstractmethod
    def close(self) -> None:
        """Free the model's memory and threads."""


def check_context(prompt_tokens: int, requested: int | None, context_length: int) -> int:
    """Refuse prompts that do not fit; cap max_tokens to the room that is left. Returns the effective max.

    `requested` 0 (a completion that only echoes its prompt, for the prompt's log-probabilities) generates
    nothing, so its prompt may fill the whole context."""
    if requested is not None and requested > context_length:
        raise InvalidRequest(
            f"max_tokens is {requested}, more than this model's whole context of {context_length} tokens.",
            param="max_tokens",
        )
    if requested is not None and requested < 0:
        raise InvalidRequest("max_tokens must not be negative.", param="max_tokens")
    room, needed = context_length - prompt_tokens, 0 if requested == 0 else 1
    if room < needed:
        raise ContextLengthExceeded(
            f"This model's maximum context length is {context_length} tokens; the prompt has {prompt_tokens} "
            f"tokens, {needed - room} too many"
            + (" (at least one token must be generated). " if needed else ". ")
            + "Shorten the messages."
        )
    return room if requested is None else min(requested, room)


def check_supported(engine: Engine, request: GenerationRequest) -> None:
    """Refuse what this engine cannot do, before it renders anything."""
    if request.prompt_logprobs and not engine.scores_prompts:
        raise InvalidRequest(
            f"Model '{engine.spec.name}' ({engine.spec.engine} engine) cannot return the prompt's log-probabilities "
            "(echo with logprobs); use a llama.cpp model, or drop echo or logprobs.",
            param="echo",
        )
    if request.tools and not engine.calls_tools:
        raise InvalidRequest(
            f"Model '{engine.spec.name}' ({engine.spec.engine} engine) cannot call tools; use a llama.cpp model "
            "(e.g. qwen2.5-0.5b-instruct), or drop tools.",
            param="tools",
        )


def check_logit_bias(bias: dict[int, float], vocab_size: int) -> None:
    """Token ids come from the client; one past the vocabulary would index out of the logits."""
    if bad := sorted(t for t in bias if not 0 <= t < vocab_size):
        raise InvalidRequest(
            f"logit_bias has token id {bad[0]}, outside this model's vocabulary of {vocab_size} tokens.",
            param="logit_bias",
        )


def validate_messages(messages: list[dict]) -> None:
    if not messages:
        raise InvalidRequest("'messages' must contain at least one message.", param="messages")
