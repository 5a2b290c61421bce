"""GGUF models on llama-cpp-python. The chat template is the one stored in the GGUF file.

We drive llama.cpp token by token (`Llama.generate`) instead of `create_completion` so we can stop between
tokens when a client leaves, and read log-probabilities from the last logits without `logits_all=True` (which
keeps a context x vocabulary float matrix: gigabytes for a 150k vocabulary).
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import llama_cpp
import numpy as np
from llama_cpp.llama_chat_format import Jinja2ChatFormatter
from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

from fmstack.core.config import Settings
from fmstack.engines.base import (
    Engine,
    Event,
    Finish,
    GenerationRequest,
    Prepared,
    TopLogprob,
    check_context,
    check_logit_bias,
    validate_messages,
)
from fmstack.engines.decoding import LogprobEntry, TextAssembler
from fmstack.engines.scheduler import Scheduler
from fmstack.core.errors import InvalidRequest
from fmstack.core.registry import ModelSpec


class LlamaCppEngine(Engine):
    def __init__(self, spec: ModelSpec, path: Path, settings: Settings):
        self.spec = spec
        self.llm = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=spec.context_length,
            n_threads=settings.threads,
            n_batch=512,
            verbose=False,
        )
        self._vocab = self.llm._model.vocab
        template = self.llm.metadata.get("tokenizer.chat_template")
        self.formatter = (
            Jinja2ChatFormatter(
                template,
                eos_token=self._token_text(self.llm.token_eos()),
                bos_token=self._token_text(self.llm.token_bos()),
            )
            if template
            else None
        )
        self.scheduler = Scheduler(spec.name, self._generate, settings.queue_size)

    def _token_text(self, token: int) -> str:
        return self.llm._model.token_get_text(token) if token >= 0 else ""

    def prepare(self, request: GenerationRequest) -> Prepared:
        if request.messages is not None:
            validate_messages(request.messages)
            if self.formatter is None:
                raise InvalidRequest(
                    f"Model '{self.spec.name}' has no chat template; use /v1/completions.", param="model"
                )
            try:
                prompt = self.formatter(messages=request.messages).prompt
            except Exception as exc:  # the template's own raise_exception: e.g. roles out of order
                raise InvalidRequest(f"The chat template rejected the messages: {exc}", param="messages") from exc
            tokens = self.llm.tokenize(prompt.encode(), add_bos=False, special=True)
        else:
            prompt = request.prompt or ""
            tokens = self.llm.tokenize(prompt.encode(), add_bos=True, special=False)
        max_tokens = check_context(len(tokens), request.max_tokens, self.context_length)
        check_logit_bias(request.logit_bias, self.llm.n_vocab())
        return Prepared(request, prompt, len(tokens), max_tokens, tokens, _grammar(request.response_format))

    def stream(self, prepared: Prepared):
        return self.scheduler.submit(prepared)

    def queue_depth(self) -> int:
        return self.scheduler.waiting

    def _generate(self, p: Prepared, cancel: threading.Event) -> Iterator[Event]:
        r = p.request
        self.llm.set_seed(r.seed if r.seed is not None else random.getrandbits(31))
        out = TextAssembler(r.stop)
        generated = 0
        reason = "length"
        tokens = self.llm.generate(
            p.tokens,
            temp=r.temperature,
            top_p=r.top_p,
            top_k=0,
            min_p=0.0,
            repeat_penalty=1.0,
            grammar=p.constraint,
            logits_processor=_bias(r.logit_bias),
            reset=True,
        )
        for token in tokens:
            if cancel.is_set():
                break
            if llama_cpp.llama_vocab_is_eog(self._vocab, token):
                reason = "stop"
                break
            logprob = self._logprobs(token, r.top_logprobs) if r.logprobs else None
            data = self.llm.detokenize([token])  # llama.cpp's token pieces carry their own leading spaces
            generated += 1
            if (delta := out.push(data, logprob)) is not None:
                yield delta
            if out.stopped:
                reason = "stop"
                break
            if generated >= p.max_tokens:
                break
        if (delta := out.flush()) is not None:
            yield delta
        yield Finish(reason, p.prompt_tokens, generated)

    def _logprobs(self, token: int, top: int) -> LogprobEntry:
        """Log-softmax of the logits the token was sampled from (still in the context until the next eval)."""
        n_vocab = self.llm.n_vocab()
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.llm._ctx.ctx, -1), shape=(n_vocab,))
        shifted = logits - logits.max()
        logp = shifted - np.log(np.exp(shifted).sum())
        best = np.argpartition(-logp, top)[:top] if top else np.array([], dtype=int)
        best = best[np.argsort(-logp[best])]
        return self._entry(token, float(logp[token])), [self._entry(int(t), float(logp[t])) for t in best]

    def _entry(self, token: int, logprob: float) -> TopLogprob:
        data = self.llm.detokenize([token])
        return TopLogprob(data.decode("utf-8", errors="replace"), logprob, list(data))

    def close(self) -> None:
        self.scheduler.close()
        self.llm.close()


def _bias(logit_bias: dict[int, float]) -> llama_cpp.LogitsProcessorList | None:
    """OpenAI's logit_bias: added to the raw logits before sampling (so -100 bans a token, +100 forces it)."""
    if not logit_bias:
        return None
    ids = np.fromiter(logit_bias, dtype=np.int64)
    values = np.fromiter(logit_bias.values(), dtype=np.float32)

    def add(_input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        scores[ids] += values
        return scores

    return llama_cpp.LogitsProcessorList([add])


def _grammar(response_format: dict | None) -> LlamaGrammar | None:
    """OpenAI's response_format as a llama.cpp grammar: any JSON object, or JSON matching a schema."""
    if not response_format or response_format.get("type") in (None, "text"):
        return None
    kind = response_format.get("type")
    try:
        if kind == "json_object":
            schema = response_format.get("schema")
            if schema:
                return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
            return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
        if kind == "json_schema":
            schema = (response_format.get("json_schema") or {}).get("schema")
            if not isinstance(schema, dict):
                raise InvalidRequest(
                    "response_format.json_schema.schema must be a JSON Schema object.", param="response_format"
                )
            return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
    except InvalidRequest:
        raise
    except Exception as exc:
        raise InvalidRequest(f"Unsupported JSON schema: {exc}", param="response_format") from exc
    raise InvalidRequest(
        f"response_format type {kind!r} is not supported; use text, json_object or json_schema.",
        param="response_format",
    )
