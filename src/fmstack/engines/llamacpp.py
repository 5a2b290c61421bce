"""GGUF models on llama-cpp-python. The chat template is the one stored in the GGUF file.

Requests are tokenized and checked here, in the caller's thread; decoding is `llamacpp_batch.BatchRunner`'s:
one context in which up to `FMSTACK_PARALLEL` sequences advance together (continuous batching), reusing cached
prompt prefixes and drafting by prompt lookup.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import llama_cpp
from llama_cpp._internals import LlamaModel
from llama_cpp._logger import set_verbose
from llama_cpp.llama_chat_format import Jinja2ChatFormatter
from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

from fmstack.core.config import Settings
from fmstack.core.errors import InvalidRequest
from fmstack.core.registry import ModelSpec
from fmstack.engines import tools
from fmstack.engines.base import (
    Engine,
    GenerationRequest,
    Prepared,
    check_context,
    check_logit_bias,
    validate_messages,
)
from fmstack.engines.llamacpp_batch import BatchConfig, BatchRunner
from fmstack.engines.sampling import check_grammar

log = logging.getLogger(__name__)


def load_gguf(path: Path) -> LlamaModel:
    """A GGUF model, loaded quietly without llama-cpp-python's `verbose=False`: that swaps the whole process's
    stdout and stderr (`sys.stdout` and file descriptors 1 and 2) for /dev/null during the load, and two loads in
    two threads put them back in the wrong order, leaving them at /dev/null for good (a `--json` result printed to
    nowhere, a server's log gone). llama.cpp's log goes through a Python callback instead: kept to errors."""
    set_verbose(False)
    return LlamaModel(path_model=str(path), params=llama_cpp.llama_model_default_params(), verbose=True)


class LlamaCppEngine(Engine):
    calls_tools = True  # tools.plan renders them and constrains every call to its schema
    scores_prompts = True  # the batch runner asks for the logits of every prompt position when a request wants them

    def __init__(self, spec: ModelSpec, path: Path, settings: Settings):
        self.spec = spec
        self.model = load_gguf(path)
        self.formatter = self._chat_formatter()
        config = BatchConfig(
            parallel=max(1, settings.parallel),
            kv_tokens=max(settings.kv_tokens, 256),
            threads=settings.threads,
            max_queue=settings.queue_size,
            speculative=settings.speculative,
            prefix_cache_bytes=max(settings.prefix_cache_mb, 0) * 2**20,
        )
        self.kv_bytes = config.kv_tokens * kv_bytes_per_token(self.model)
        self.runner = BatchRunner(spec.name, self.model, config)
        log.info(
            "%s: %d sequences in parallel sharing %d KV cells (%.0f MiB), finished prefixes kept in up to %d MiB",
            spec.name,
            config.parallel,
            config.kv_tokens,
            self.kv_bytes / 2**20,
            config.prefix_cache_bytes // 2**20,
        )

    def _chat_formatter(self) -> Jinja2ChatFormatter | None:
        template = self.model.metadata().get("tokenizer.chat_template")
        if not template:
            return None
        return Jinja2ChatFormatter(
            template,
            eos_token=self._token_text(self.model.token_eos()),
            bos_token=self._token_text(self.model.token_bos()),
        )

    def _token_text(self, token: int) -> str:
        return self.model.token_get_text(token) if token >= 0 else ""

    @property
    def context_length(self) -> int:
        """A request also has to fit in the cells all sequences share."""
        return min(self.spec.context_length, self.runner.config.kv_tokens)

    def prepare(self, request: GenerationRequest) -> Prepared:
        if request.messages is not None:
            validate_messages(request.messages)
            if self.formatter is None:
                raise InvalidRequest(
                    f"Model '{self.spec.name}' has no chat template; use /v1/completions.", param="model"
                )
            tooling = self._tool_plan(request)
            messages, offered_tools = (tooling.messages, tooling.tools) if tooling else (request.messages, None)
            try:
                prompt = self.formatter(messages=messages, tools=offered_tools).prompt
            except Exception as exc:  # the template's own raise_exception: e.g. roles out of order
                raise InvalidRequest(f"The chat template rejected the messages: {exc}", param="messages") from exc
            tokens = self.model.tokenize(prompt.encode(), add_bos=False, special=True)
        else:
            tooling = None
            prompt = request.prompt or ""
            tokens = self.model.tokenize(prompt.encode(), add_bos=True, special=False)
        if not tokens:
            raise InvalidRequest("The prompt is empty.", param="prompt")
        max_tokens = check_context(len(tokens), request.max_tokens, self.context_length)
        check_logit_bias(request.logit_bias, self.model.n_vocab())
        grammar = tooling.constraint if tooling and tooling.constraint else _grammar(request.response_format)
        if grammar is not None:
            check_grammar(self.model.vocab, grammar)
        preserve = self._tool_tags() if tooling else frozenset()
        return Prepared(request, prompt, len(tokens), max_tokens, tokens, grammar, preserve)

    def _tool_plan(self, request: GenerationRequest) -> tools.ToolPlan | None:
        """Tools offered by the GGUF's own template when it renders them (Qwen2.5's does), else by fmstack's
        generic prompt; None for a request without tools or tool messages."""
        if not tools.involved(request.messages, request.tools):
            return None
        knows = "tools" in (self.model.metadata().get("tokenizer.chat_template") or "")
        return tools.plan(
            request.messages,
            request.tools,
            request.tool_choice,
            request.parallel_tool_calls,
            knows,
            request.response_format,
        )

    def _tool_tags(self) -> frozenset[int]:
        """The tool-call tags when the vocabulary has them as single special tokens (Qwen2.5's `<tool_call>`): their
        text must reach the answer, where the calls are parsed from it."""
        tags = (self.model.tokenize(tag.encode(), add_bos=False, special=True) for tag in (tools.OPEN, tools.CLOSE))
        return frozenset(ids[0] for ids in tags if len(ids) == 1)

    def stream(self, prepared: Prepared):
        return self.runner.submit(prepared)

    def queue_depth(self) -> int:
        return self.runner.waiting

    def close(self) -> None:
        self.runner.close()
        self.model.close()


def kv_bytes_per_token(model: LlamaModel) -> int:
    """Bytes of K and V (f16) one token takes in every layer, from the model's shape."""
    m = model.model
    n_head, n_head_kv = llama_cpp.llama_model_n_head(m), llama_cpp.llama_model_n_head_kv(m)
    meta = model.metadata()
    arch = meta.get("general.architecture", "")
    head = llama_cpp.llama_model_n_embd(m) // max(n_head, 1)
    k = int(meta.get(f"{arch}.attention.key_length", head))
    v = int(meta.get(f"{arch}.attention.value_length", head))
    return llama_cpp.llama_model_n_layer(m) * n_head_kv * (k + v) * 2


def _grammar(response_format: dict | None) -> str | None:
    """OpenAI's response_format as a llama.cpp GBNF grammar: any JSON object, or JSON matching a schema."""
    if not response_format or response_format.get("type") in (None, "text"):
        return None
    kind = response_format.get("type")
    try:
        if kind == "json_object":
            schema = response_format.get("schema")
            if schema:
                return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)._grammar
            return JSON_GBNF
        if kind == "json_schema":
            schema = (response_format.get("json_schema") or {}).get("schema")
            if not isinstance(schema, dict):
                raise InvalidRequest(
                    "response_format.json_schema.schema must be a JSON Schema object.", param="response_format"
                )
            return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)._grammar
    except InvalidRequest:
        raise
    except Exception as exc:
        raise InvalidRequest(f"Unsupported JSON schema: {exc}", param="response_format") from exc
    raise InvalidRequest(
        f"response_format type {kind!r} is not supported; use text, json_object or json_schema.",
        param="response_format",
    )
