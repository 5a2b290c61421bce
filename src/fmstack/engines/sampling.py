"""Per-sequence sampling for llama.cpp: one native sampler chain per request.

In a batch every sequence keeps its own temperature, top_p, seed (its own random stream), logit_bias and grammar
state, so a request samples the same tokens whether it decodes alone or next to seven others. The chain is
llama.cpp's (C, over the whole vocabulary), not Python: at eight streams the sampling of a step costs far less than
its decode.

Order: logit_bias, grammar, then temperature before top_p (OpenAI's meaning: the nucleus of the tempered
distribution, as the transformers engine does) and a seeded draw; temperature 0 is greedy.
"""

from __future__ import annotations

import ctypes
import random
from collections.abc import Callable

import llama_cpp
import numpy as np

from fmstack.core.errors import InvalidRequest
from fmstack.engines.base import GenerationRequest, TopLogprob
from fmstack.engines.decoding import LogprobEntry
from fmstack.engines.tools import LazyGrammar


class SequenceSampler:
    """A request's sampler chain; `sample` draws a token from the logits of one batch row and accepts it
    (advancing the grammar and the random stream)."""

    def __init__(self, request: GenerationRequest, vocab: llama_cpp.llama_vocab_p, n_vocab: int, grammar: str | None):
        self._chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        try:
            self._build(request, vocab, n_vocab, grammar)
        except BaseException:
            self.close()
            raise

    def _build(self, r: GenerationRequest, vocab: llama_cpp.llama_vocab_p, n_vocab: int, grammar: str | None) -> None:
        if r.logit_bias:
            biases = (llama_cpp.llama_logit_bias * len(r.logit_bias))(
                *(llama_cpp.llama_logit_bias(token, bias) for token, bias in r.logit_bias.items())
            )
            self._add(llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(r.logit_bias), biases))
        if grammar is not None:
            self._add(grammar_sampler(vocab, grammar))
        if r.temperature <= 0:
            self._add(llama_cpp.llama_sampler_init_greedy())
            return
        self._add(llama_cpp.llama_sampler_init_temp(r.temperature))
        if r.top_p < 1.0:
            self._add(llama_cpp.llama_sampler_init_top_p(r.top_p, 1))
        seed = r.seed if r.seed is not None else random.getrandbits(31)
        self._add(llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF))

    def _add(self, sampler: llama_cpp.llama_sampler_p) -> None:
        llama_cpp.llama_sampler_chain_add(self._chain, sampler)  # the chain owns it from now on

    def sample(self, ctx: llama_cpp.llama_context_p, row: int) -> int:
        return llama_cpp.llama_sampler_sample(self._chain, ctx, row)

    def close(self) -> None:
        if self._chain is not None:
            llama_cpp.llama_sampler_free(self._chain)
            self._chain = None


def grammar_sampler(vocab: llama_cpp.llama_vocab_p, grammar: str | LazyGrammar) -> llama_cpp.llama_sampler_p:
    """llama.cpp's GBNF sampler (lazy: it starts where a trigger pattern matches); NULL on a grammar it cannot
    parse."""
    if isinstance(grammar, LazyGrammar):
        patterns = (ctypes.c_char_p * len(grammar.patterns))(*(p.encode() for p in grammar.patterns))
        sampler = llama_cpp.llama_sampler_init_grammar_lazy_patterns(
            vocab, grammar.grammar.encode(), b"root", patterns, len(grammar.patterns), None, 0
        )
    else:
        sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
    if not sampler:
        raise InvalidRequest("The JSON schema gave a grammar llama.cpp could not parse.", param="response_format")
    return sampler


def check_grammar(vocab: llama_cpp.llama_vocab_p, grammar: str) -> None:
    """Parse once at prepare time, so a bad schema is a 400 and not an error in the middle of a stream."""
    llama_cpp.llama_sampler_free(grammar_sampler(vocab, grammar))


class Logprobs:
    """Log-probabilities of the model's raw logits (before bias, grammar and temperature, as OpenAI reports
    them), for the token sampled from one batch row and the `top` most likely ones."""

    def __init__(self, n_vocab: int, piece: Callable[[int], bytes]):
        self.n_vocab = n_vocab
        self._piece = piece

    def entry(self, ctx: llama_cpp.llama_context_p, row: int, token: int, top: int) -> LogprobEntry:
        pointer = llama_cpp.llama_get_logits_ith(ctx, row)
        logits = np.ctypeslib.as_array(ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), shape=(self.n_vocab,))
        shifted = logits - logits.max()
        logp = shifted - np.log(np.exp(shifted).sum())
        best = np.argpartition(-logp, top)[:top] if top else np.array([], dtype=int)
        best = best[np.argsort(-logp[best])]
        return self._top(token, float(logp[token])), [self._top(int(t), float(logp[t])) for t in best]

    def unscored(self, token: int) -> LogprobEntry:
        """A prompt's first token: no logits precede it, so it has no log-probability (None, as OpenAI's)."""
        return self._top(token, None), []

    def _top(self, token: int, logprob: float | None) -> TopLogprob:
        data = self._piece(token)
        return TopLogprob(data.decode("utf-8", errors="replace"), logprob, list(data))
