"""Hugging Face checkpoints (config.json + safetensors) on PyTorch: the engine for trained and fine-tuned models.

Requests are tokenized and checked here, in the caller's thread; decoding is `transformers_batch.BatchRunner`'s:
the requests that wait together decode as one batch (up to `FMSTACK_PARALLEL` rows), each with its own sampling.
The decode loop is ours (a KV cache and one forward pass per step) so that it can stop between tokens and report
log-probabilities exactly like the llama.cpp engine does. `response_format` (json_object, json_schema) is
grammar-constrained by xgrammar, compiled here once per schema.
"""

from __future__ import annotations

import inspect
import json
import logging
import threading
from pathlib import Path

import torch
import xgrammar as xgr
from transformers import AutoModelForCausalLM, AutoTokenizer

from fmstack.core.config import Settings
from fmstack.core.errors import InvalidRequest
from fmstack.core.registry import ModelSpec
from fmstack.engines.base import (
    Engine,
    GenerationRequest,
    Prepared,
    check_context,
    check_logit_bias,
    validate_messages,
)
from fmstack.engines.transformers_batch import BatchConfig, BatchRunner, Model, joinable

log = logging.getLogger(__name__)


class TransformersEngine(Engine):
    def __init__(self, spec: ModelSpec, path: Path, settings: Settings):
        self.spec = spec
        torch.set_num_threads(settings.threads)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        eos = self.model.generation_config.eos_token_id
        eos = (eos if isinstance(eos, list) else [eos]) + [self.tokenizer.eos_token_id]
        self.eos_ids = {e for e in eos if e is not None}
        self.vocab_size = self.model.config.vocab_size
        params = inspect.signature(self.model.forward).parameters
        # transformers 5.x calls the KV cache `cache` (`past_key_values` is deprecated and goes in 5.40); 4.x has
        # only `past_key_values`.
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        # only the last position's logits: a prompt's others would cost a vocabulary-wide product each
        self._keep_arg = next((a for a in ("logits_to_keep", "num_logits_to_keep") if a in params), None)
        self._compiler: xgr.GrammarCompiler | None = None
        self._compiler_lock = threading.Lock()
        join = joinable(self._new_cache())
        config = BatchConfig(
            parallel=max(1, settings.parallel) if join else 1,
            max_queue=settings.queue_size,
            vocab_size=self.vocab_size,
            eos_ids=frozenset(self.eos_ids),
            joinable=join,
        )
        model = Model(self._forward, self._decode, self._new_cache if join else lambda: None)
        self.runner = BatchRunner(spec.name, model, config)
        log.info("%s: up to %d requests decoded together", spec.name, config.parallel)

    def _new_cache(self) -> object:
        """The cache the model would make for itself (transformers 5), made here so that rows can join a batch."""
        try:
            from transformers import DynamicCache

            return DynamicCache(config=self.model.config)
        except (ImportError, TypeError):  # transformers 4: no per-layer cache to edit
            return None

    def _forward(
        self, ids: torch.Tensor, cache: object, mask: torch.Tensor | None, positions: torch.Tensor | None
    ) -> tuple[torch.Tensor, object]:
        kwargs: dict = {self._cache_arg: cache, "use_cache": True}
        if mask is not None:
            kwargs["attention_mask"] = mask
        if positions is not None:
            kwargs["position_ids"] = positions
        if self._keep_arg:
            kwargs[self._keep_arg] = 1
        result = self.model(input_ids=ids, **kwargs)
        return result.logits[:, -1], getattr(result, self._cache_arg)

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def prepare(self, request: GenerationRequest) -> Prepared:
        if request.messages is not None:
            validate_messages(request.messages)
            if not self.tokenizer.chat_template:
                raise InvalidRequest(f"Model '{self.spec.name}' has no chat template; use /v1/completions.")
            try:
                prompt = self.tokenizer.apply_chat_template(
                    request.messages, tokenize=False, add_generation_prompt=True
                )
            except Exception as exc:  # the template's own raise_exception: e.g. roles out of order
                raise InvalidRequest(f"The chat template rejected the messages: {exc}", param="messages") from exc
            tokens = self.tokenizer(prompt, add_special_tokens=False).input_ids
        else:
            prompt = request.prompt or ""
            tokens = self.tokenizer(prompt).input_ids
        if not tokens:
            raise InvalidRequest("The prompt is empty.", param="prompt")
        max_tokens = check_context(len(tokens), request.max_tokens, self.context_length)
        check_logit_bias(request.logit_bias, self.vocab_size)
        grammar = self._grammar(request.response_format)
        return Prepared(request, prompt, len(tokens), max_tokens, tokens, grammar)

    def _grammar(self, response_format: dict | None) -> xgr.CompiledGrammar | None:
        """OpenAI's response_format as a compiled grammar: any JSON object, or JSON matching a schema (compact:
        no free whitespace, which a small model could fill its whole answer with)."""
        if not response_format or response_format.get("type") in (None, "text"):
            return None
        kind = response_format.get("type")
        if kind == "json_object":
            schema, strict = response_format.get("schema") or {"type": "object"}, "schema" in response_format
        elif kind == "json_schema":
            spec = response_format.get("json_schema") or {}
            schema, strict = spec.get("schema"), True
            if not isinstance(schema, dict):
                raise InvalidRequest(
                    "response_format.json_schema.schema must be a JSON Schema object.", param="response_format"
                )
        else:
            raise InvalidRequest(
                f"response_format type {kind!r} is not supported; use text, json_object or json_schema.",
                param="response_format",
            )
        try:
            return self._grammar_compiler().compile_json_schema(
                json.dumps(schema), any_whitespace=False, strict_mode=strict
            )
        except Exception as exc:  # xgrammar raises RuntimeError with its parser's message
            raise InvalidRequest(f"Unsupported JSON schema: {exc}", param="response_format") from exc

    def _grammar_compiler(self) -> xgr.GrammarCompiler:
        """Made on the first request with a response_format (reading the vocabulary takes a moment); it caches
        every schema it compiles."""
        with self._compiler_lock:
            if self._compiler is None:
                info = xgr.TokenizerInfo.from_huggingface(
                    self.tokenizer, vocab_size=self.vocab_size, stop_token_ids=sorted(self.eos_ids)
                )
                self._compiler = xgr.GrammarCompiler(info, max_threads=1)
            return self._compiler

    def stream(self, prepared: Prepared):
        return self.runner.submit(prepared)

    def queue_depth(self) -> int:
        return self.runner.waiting

    def close(self) -> None:
        self.runner.close()
