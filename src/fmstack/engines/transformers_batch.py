"""Batched decoding for the transformers engine: requests that wait together decode as one batch.

One worker thread owns the model. Between steps it admits waiting requests while fewer than `parallel` rows run.
A new request is prefilled alone, in a KV cache of its own (its prompt in chunks while other rows decode, so a
long prompt stalls them one chunk at a time), samples its first token, and then joins the batch: its cache is
left-padded to the batch's length and stacked under the others', the attention mask hides the padding and the
position ids count only its own tokens. Every step is then one forward pass over the last token of every row.

Each row samples from its own row of the logits with its own parameters, as the llama.cpp engine's sequences do:
logit_bias, then the JSON grammar of `response_format` (xgrammar's token bitmask; rows with and without one share
the batch), temperature, top_p, and a draw from the row's own `torch.Generator` seeded by the request, so a seeded
request samples the same tokens alone or in a batch. Stop strings, max_tokens and EOS end a row, which then leaves
the batch at once, as does a row whose reader closed its stream; padding columns no row needs any more are cut.

Joining edits the cache's tensors, which transformers' `DynamicCache` of full-attention layers allows. Any other
cache (sliding-window or linear-attention layers, transformers 4) decodes one request at a time.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import torch
import xgrammar as xgr

from fmstack.engines.base import Event, Finish, GenerationRequest, Prepared, TopLogprob
from fmstack.engines.compute import COMPUTE
from fmstack.engines.decoding import LogprobEntry, TextAssembler
from fmstack.engines.jobs import END, Job, JobQueue, Outbox

log = logging.getLogger(__name__)
T = TypeVar("T")

PREFILL_CHUNK = 256  # prompt tokens per step while other rows decode: their next token waits for the chunk


@dataclass(frozen=True)
class BatchConfig:
    parallel: int  # rows decoded together
    max_queue: int
    vocab_size: int  # columns of the logits
    eos_ids: frozenset[int]
    joinable: bool  # whether a prefilled row's cache can join a running batch (else one request at a time)


class RowSampler:
    """A request's sampling: logit_bias, grammar, temperature, top_p and a seeded random stream of its own."""

    def __init__(self, request: GenerationRequest, grammar: xgr.CompiledGrammar | None):
        self.request = request
        seed = request.seed if request.seed is not None else random.getrandbits(31)
        self.generator = torch.Generator().manual_seed(seed)
        self.bias_ids = torch.tensor(list(request.logit_bias), dtype=torch.long)
        self.bias = torch.tensor(list(request.logit_bias.values()), dtype=torch.float32)
        self.matcher = xgr.GrammarMatcher(grammar) if grammar is not None else None

    def bias_logits(self, logits: torch.Tensor) -> None:
        if len(self.bias_ids):
            logits[self.bias_ids] += self.bias

    def draw(self, logits: torch.Tensor) -> int:
        r = self.request
        return sample(logits, r.temperature, r.top_p, self.generator)

    def accept(self, token: int) -> None:
        if self.matcher is not None and not self.matcher.accept_token(token):
            raise RuntimeError(f"the grammar rejected token {token}, which its own bitmask allowed")


def sample(logits: torch.Tensor, temperature: float, top_p: float, rng: torch.Generator) -> int:
    """Greedy at temperature 0; otherwise nucleus sampling from the tempered distribution (OpenAI's order)."""
    if temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        outside = torch.cumsum(sorted_probs, 0) - sorted_probs > top_p
        sorted_probs[outside] = 0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=rng))


@dataclass(eq=False)
class Row:
    """A running request: its tokens (prompt, then generated), its own cache until it joins the batch, its text."""

    job: Job
    sampler: RowSampler
    text: TextAssembler
    tokens: list[int]
    prefilled: int = 0  # prompt tokens in its cache
    cache: object = None  # its own KV cache while it is prefilled; None once in the batch
    generated: list[int] = field(default_factory=list)
    # incremental detokenization (as in vLLM and TGI): the text of generated[shown:read] was handed on; decoding
    # from `shown` keeps the tokens before the new ones as context (a word's leading space), not the whole answer
    shown: int = 0
    read: int = 0

    @property
    def prepared(self) -> Prepared:
        return self.job.prepared


@dataclass(frozen=True)
class Model:
    """What the runner needs from the engine."""

    # (input_ids, cache or None, attention_mask, position_ids) -> (the last position's logits [rows, vocab], cache)
    forward: Callable[..., tuple[torch.Tensor, object]]
    decode: Callable[[list[int]], str]  # generated tokens -> their text
    new_cache: Callable[[], object]  # an empty cache for a prompt (None: the model makes its own)


class BatchRunner:
    def __init__(self, name: str, model: Model, config: BatchConfig):
        self.name = name
        self.model = model
        self.config = config
        self.jobs = JobQueue(name, config.max_queue)
        self._waiting: list[Row] = []  # admitted, being prefilled
        self._batch: list[Row] = []  # decoding, in the order of the batch cache's rows
        self._cache: object = None
        self._mask = torch.ones(0, 0, dtype=torch.long)
        self._bitmask = xgr.allocate_token_bitmask(config.parallel, config.vocab_size)
        self.widest = 0  # the most rows one decode step has held
        self._out = Outbox()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"fmstack-{name}", daemon=True)
        self._thread.start()

    # -- callers' side -------------------------------------------------------------------------------------------

    @property
    def waiting(self) -> int:
        return self.jobs.waiting

    @property
    def running(self) -> int:
        """Rows admitted and not yet finished or cancelled (being prefilled or decoding)."""
        return len(self._waiting) + len(self._batch)

    def submit(self, prepared: Prepared) -> AsyncIterator[Event]:
        return self.jobs.submit(prepared)

    def close(self) -> None:
        """Stop at the next step: running and waiting streams end without a Finish (the caller sees them cut)."""
        self._closing.set()
        self.jobs.close()
        self._thread.join(timeout=30)

    # -- the worker ----------------------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            with torch.inference_mode():
                while not self._closing.is_set() and self._admit():
                    self._drop_cancelled()
                    self._step()
                    self._out.flush()
        finally:
            for row in [*self._waiting, *self._batch]:
                self._out.put(row.job, END)
            self._waiting, self._batch, self._cache = [], [], None
            while True:
                with contextlib.suppress(queue.Empty):
                    if (job := self.jobs.get(block=False)) is not None:
                        self._out.put(job, END)
                        continue
                break
            self._out.flush()

    def _admit(self) -> bool:
        """Take waiting jobs while rows are free (block when nothing runs). False once closed."""
        while self.running < (self.config.parallel if self.config.joinable else 1):
            try:
                job = self.jobs.get(block=not self.running)
            except queue.Empty:
                return True
            if job is None:
                return False
            self._start(job)
        return True

    def _start(self, job: Job) -> None:
        p = job.prepared
        try:
            sampler = RowSampler(p.request, p.constraint)
        except Exception as exc:
            self._out.put(job, exc)
            self._out.put(job, END)
            return
        row = Row(job, sampler, TextAssembler(p.request.stop), list(p.tokens))
        if p.max_tokens <= 0:  # nothing to generate
            self._finish(row, "length")
        else:
            self._waiting.append(row)

    def _drop_cancelled(self) -> None:
        """A stream closed by its reader leaves at once: its row and its KV cells are freed before the next step."""
        self._waiting = [r for r in self._waiting if not r.job.cancel.is_set()]
        gone = [r for r in self._batch if r.job.cancel.is_set()]
        if gone:
            self._leave(gone)

    def _step(self) -> None:
        try:
            self._prefill()
            if self._batch:
                self._decode()
        except Exception as exc:  # every running caller gets it; the runner goes on with the next requests
            log.exception("decode step failed")
            for row in [*self._waiting, *self._batch]:
                self._out.put(row.job, exc)
                self._out.put(row.job, END)
            self._waiting, self._batch, self._cache = [], [], None
            self._mask = torch.ones(0, 0, dtype=torch.long)

    def _prefill(self) -> None:
        """Feed waiting prompts, oldest first: whole while nothing decodes, else one chunk in all per step."""
        budget = PREFILL_CHUNK if self._batch else None
        for row in list(self._waiting):
            if budget is not None and budget <= 0:
                break
            prompt = row.tokens
            end = len(prompt) if budget is None else min(len(prompt), row.prefilled + budget)
            chunk = prompt[row.prefilled : end]
            cache = row.cache if row.prefilled else self.model.new_cache()
            logits, row.cache = COMPUTE.call(_inference, self.model.forward, torch.tensor([chunk]), cache, None, None)
            row.prefilled = end
            if budget is not None:
                budget -= len(chunk)
            if end < len(prompt):
                continue
            self._waiting.remove(row)
            reason = self._sample([row], logits)[0]
            if reason:
                self._finish(row, reason)
            else:
                self._join(row)

    def _join(self, row: Row) -> None:
        """Stack the row's cache under the batch's, left-padding whichever is shorter."""
        cache, row.cache, length = row.cache, None, row.prefilled
        if not self._batch:
            self._cache, self._mask = cache, torch.ones(1, length, dtype=torch.long)
        else:
            width = self._mask.shape[1]
            total = max(length, width)
            stack_rows(self._cache, width, cache, length, total)
            mine = torch.ones(1, length, dtype=torch.long)
            self._mask = torch.cat([_pad_left(self._mask, total - width), _pad_left(mine, total - length)])
        self._batch.append(row)

    def _decode(self) -> None:
        rows = self._batch
        self.widest = max(self.widest, len(rows))
        ids = torch.tensor([[r.tokens[-1]] for r in rows])
        positions = torch.tensor([[len(r.tokens) - 1] for r in rows])
        mask = torch.cat([self._mask, torch.ones(len(rows), 1, dtype=torch.long)], dim=1)
        logits, self._cache = COMPUTE.call(_inference, self.model.forward, ids, self._cache, mask, positions)
        self._mask = mask
        reasons = self._sample(rows, logits)
        done = [r for r, reason in zip(rows, reasons, strict=True) if reason]
        for row, reason in zip(rows, reasons, strict=True):
            if reason:
                self._finish(row, reason)
        if done:
            self._leave(done)

    def _leave(self, rows: list[Row]) -> None:
        """Drop rows from the batch and the padding columns that only they needed."""
        keep = [i for i, r in enumerate(self._batch) if r not in rows]
        self._batch = [self._batch[i] for i in keep]
        if not keep:
            self._cache, self._mask = None, torch.ones(0, 0, dtype=torch.long)
            return
        self._mask = self._mask[keep]
        cut = int(self._mask.argmax(dim=1).min())  # the first real column of the longest row
        self._mask = self._mask[:, cut:]
        select_rows(self._cache, torch.tensor(keep), cut)

    def _sample(self, rows: list[Row], logits: torch.Tensor) -> list[str | None]:
        """One token for every row from its row of `logits` (float32, [rows, vocab]); each row's finish reason."""
        logits = logits.float()
        # OpenAI reports the model's own distribution: before logit_bias, grammar and temperature
        logp = [torch.log_softmax(logits[i], -1) if r.prepared.request.logprobs else None for i, r in enumerate(rows)]
        for i, r in enumerate(rows):
            r.sampler.bias_logits(logits[i])
        constrained = [i for i, r in enumerate(rows) if r.sampler.matcher is not None]
        if constrained:
            for i in constrained:
                rows[i].sampler.matcher.fill_next_token_bitmask(self._bitmask, i)
            xgr.apply_token_bitmask_inplace(
                logits, self._bitmask[: len(rows)], vocab_size=self.config.vocab_size, indices=constrained
            )
        return [self._take(r, r.sampler.draw(logits[i]), logp[i]) for i, r in enumerate(rows)]

    def _take(self, row: Row, token: int, logp: torch.Tensor | None) -> str | None:
        """Emit a sampled token; the finish reason when it ends the row."""
        row.sampler.accept(token)
        if token in self.config.eos_ids:
            return "stop"
        row.generated.append(token)
        row.tokens.append(token)
        new = self._new_text(row)
        entry = self._logprob_entry(logp, token, row.prepared.request.top_logprobs) if logp is not None else None
        if (delta := row.text.push(new, entry)) is not None:
            self._out.put(row.job, delta)
        if row.text.stopped:
            return "stop"
        if len(row.generated) >= row.prepared.max_tokens:
            return "length"
        return None

    def _new_text(self, row: Row) -> bytes:
        """The text the newest tokens add; nothing while they end in an incomplete UTF-8 character."""
        before = self.model.decode(row.generated[row.shown : row.read])
        text = self.model.decode(row.generated[row.shown :])
        if len(text) <= len(before) or text.endswith("\ufffd"):
            return b""
        row.shown, row.read = row.read, len(row.generated)
        return text[len(before) :].encode()

    def _logprob_entry(self, logp: torch.Tensor, token: int, top: int) -> LogprobEntry:
        values, indices = torch.topk(logp, top) if top else (torch.tensor([]), torch.tensor([], dtype=torch.long))
        best = [self._top(int(t), float(v)) for v, t in zip(values, indices, strict=True)]
        return self._top(token, float(logp[token])), best

    def _top(self, token: int, logprob: float) -> TopLogprob:
        text = self.model.decode([token])
        return TopLogprob(text, logprob, list(text.encode()))

    def _finish(self, row: Row, reason: str) -> None:
        if (delta := row.text.flush()) is not None:
            self._out.put(row.job, delta)
        self._out.put(row.job, Finish(reason, row.prepared.prompt_tokens, len(row.generated)))
        self._out.put(row.job, END)


# -- the batch's KV cache: a transformers DynamicCache of full-attention layers, [rows, heads, positions, dim] -------


def joinable(cache: object) -> bool:
    """Whether the cache's tensors can be padded, stacked and selected here."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def _filled(cache: object) -> list:
    return [layer for layer in cache.layers if layer.is_initialized and layer.keys is not None]


def stack_rows(cache: object, width: int, other: object, length: int, total: int) -> None:
    """Put `other`'s rows under `cache`'s, both left-padded from their widths to `total` positions."""
    for a, b in zip(_filled(cache), _filled(other), strict=True):
        a.keys = torch.cat([_pad_left(a.keys, total - width, -2), _pad_left(b.keys, total - length, -2)])
        a.values = torch.cat([_pad_left(a.values, total - width, -2), _pad_left(b.values, total - length, -2)])


def select_rows(cache: object, keep: torch.Tensor, cut: int) -> None:
    """Keep the rows `keep`, without their first `cut` positions (padding in all of them)."""
    for layer in _filled(cache):
        layer.keys = layer.keys[keep, :, cut:]
        layer.values = layer.values[keep, :, cut:]


def _pad_left(t: torch.Tensor, n: int, dim: int = -1) -> torch.Tensor:
    if n <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = n
    return torch.cat([t.new_zeros(shape), t], dim=dim)


def _inference(forward: Callable[..., T], *args) -> T:
    """A forward pass as run on the compute thread (one OpenMP team for torch and llama.cpp: engines/compute.py),
    in inference mode there too (the mode is per thread)."""
    with torch.inference_mode():
        return forward(*args)
