"""Hugging Face checkpoints (config.json + safetensors) on PyTorch: the engine for trained and fine-tuned models.

The decode loop is ours (a KV cache and one forward pass per token) so that it can stop between tokens and report
log-probabilities exactly like the llama.cpp engine does.
"""

from __future__ import annotations

import inspect
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from fmstack.core.config import Settings
from fmstack.core.errors import InvalidRequest
from fmstack.core.registry import ModelSpec
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


class TransformersEngine(Engine):
    def __init__(self, spec: ModelSpec, path: Path, settings: Settings):
        self.spec = spec
        torch.set_num_threads(settings.threads)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        eos = self.model.generation_config.eos_token_id
        eos = (eos if isinstance(eos, list) else [eos]) + [self.tokenizer.eos_token_id]
        self.eos_ids = {e for e in eos if e is not None}
        # transformers 5.x calls the KV cache `cache` (`past_key_values` is deprecated and goes in 5.40); 4.x has
        # only `past_key_values`.
        self._cache_arg = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        self.scheduler = Scheduler(spec.name, self._generate, settings.queue_size)

    def prepare(self, request: GenerationRequest) -> Prepared:
        if request.response_format and request.response_format.get("type") not in (None, "text"):
            raise InvalidRequest(
                "response_format json_object/json_schema needs grammar-constrained decoding, which the "
                "transformers engine does not have; export the model to GGUF (llamacpp engine) for it.",
                param="response_format",
            )
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
        max_tokens = check_context(len(tokens), request.max_tokens, self.context_length)
        check_logit_bias(request.logit_bias, self.model.config.vocab_size)
        return Prepared(request, prompt, len(tokens), max_tokens, tokens)

    def stream(self, prepared: Prepared):
        return self.scheduler.submit(prepared)

    def queue_depth(self) -> int:
        return self.scheduler.waiting

    @torch.inference_mode()
    def _generate(self, p: Prepared, cancel: threading.Event) -> Iterator[Event]:
        r = p.request
        rng = torch.Generator().manual_seed(r.seed if r.seed is not None else random.getrandbits(31))
        out = TextAssembler(r.stop)
        ids, past, generated, emitted, reason = torch.tensor([p.tokens]), None, [], "", "length"
        bias_ids = torch.tensor(list(r.logit_bias), dtype=torch.long)
        bias = torch.tensor(list(r.logit_bias.values()), dtype=torch.float32)
        while len(generated) < p.max_tokens and not cancel.is_set():
            result = self.model(input_ids=ids, use_cache=True, **{self._cache_arg: past})
            past, logits = getattr(result, self._cache_arg), result.logits[0, -1].float()
            logits[bias_ids] += bias
            token = _sample(logits, r.temperature, r.top_p, rng)
            if token in self.eos_ids:
                reason = "stop"
                break
            logprob = self._logprobs(logits, token, r.top_logprobs) if r.logprobs else None
            generated.append(token)
            text = self.tokenizer.decode(generated, skip_special_tokens=True)
            if text.endswith("\ufffd"):  # an incomplete UTF-8 character: wait for the next token
                new = b""
            else:
                new, emitted = text[len(emitted) :].encode(), text
            if (delta := out.push(new, logprob)) is not None:
                yield delta
            if out.stopped:
                reason = "stop"
                break
            ids = torch.tensor([[token]])
        if (delta := out.flush()) is not None:
            yield delta
        yield Finish(reason, p.prompt_tokens, len(generated))

    def _logprobs(self, logits: torch.Tensor, token: int, top: int) -> LogprobEntry:
        logp = torch.log_softmax(logits, dim=-1)
        values, indices = torch.topk(logp, top) if top else (torch.tensor([]), torch.tensor([], dtype=torch.long))
        entries = [self._entry(int(t), float(v)) for v, t in zip(values, indices, strict=True)]
        return self._entry(token, float(logp[token])), entries

    def _entry(self, token: int, logprob: float) -> TopLogprob:
        text = self.tokenizer.decode([token])
        return TopLogprob(text, logprob, list(text.encode()))

    def close(self) -> None:
        self.scheduler.close()


def _sample(logits: torch.Tensor, temperature: float, top_p: float, rng: torch.Generator) -> int:
    """Greedy at temperature 0; otherwise nucleus sampling from the tempered distribution."""
    if temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        outside = torch.cumsum(sorted_probs, 0) - sorted_probs > top_p
        sorted_probs[outside] = 0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=rng))
