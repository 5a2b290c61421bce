"""Continuous batching on one llama.cpp context: every running sequence advances in one `llama_batch` per step.

One worker thread owns the context. Each step it admits waiting requests into free sequence slots, then decodes
one batch holding the next token of every decoding sequence (plus its prompt-lookup draft, see `speculative`)
and a chunk of the prompts still being read, so a long prompt is prefilled over several steps without stalling
the streams already running. Then it samples every sequence from its own row of the logits with its own sampler
chain, and hands the events of the step to the callers in one wake-up of their event loop.

The KV cache is unified: all sequences share `n_ctx` cells, each request uses what it needs (a per-sequence split
would cap every request at n_ctx / parallel), and a prefix shared by running sequences is stored once. It holds
only running sequences: a finished one's cells move to host memory (`prefix_cache`). When the cells run out, the
step gives way in order: drafts are skipped, the prompt chunk is halved, and last the sequence holding the most
cells ends with finish_reason "length" so the others go on.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import queue
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import llama_cpp
from llama_cpp._internals import LlamaContext, LlamaModel

from fmstack.core.errors import EngineError
from fmstack.engines.base import Delta, Event, Finish, GenerationRequest, Prepared
from fmstack.engines.compute import COMPUTE
from fmstack.engines.decoding import LogprobEntry, TextAssembler
from fmstack.engines.jobs import END, Job, JobQueue, Outbox
from fmstack.engines.prefix_cache import PrefixCache, Slot
from fmstack.engines.sampling import Logprobs, SequenceSampler
from fmstack.engines.speculative import Drafter

log = logging.getLogger(__name__)

N_BATCH = 512  # most tokens one decode takes (prompt chunks + one row per decoding sequence + drafts)
PREFILL_CHUNK = 128  # prompt tokens per step while other sequences decode: their next token waits for it
SPECULATE_MAX_STREAMS = 2  # drafts only while this few sequences decode: a wide batch has no idle compute


@dataclass(frozen=True)
class BatchConfig:
    parallel: int  # sequences decoded together
    kv_tokens: int  # KV cells shared by all of them
    threads: int
    max_queue: int
    speculative: bool  # prompt lookup for requests that do not say
    prefix_cache_bytes: int = 1 << 30  # host memory for finished sequences' KV cells
    flash_attn: bool = True


@dataclass(eq=False)
class Sequence:
    """A running request: its slot (tokens and KV cells), sampler, text and counts."""

    job: Job
    slot: Slot
    sampler: SequenceSampler
    text: TextAssembler
    cached: int
    drafter: Drafter | None
    generated: int = 0
    draft: list[int] = field(default_factory=list)
    scored: list[LogprobEntry] | None = None  # the prompt's log-probabilities so far, for `prompt_logprobs`

    @property
    def prepared(self) -> Prepared:
        return self.job.prepared

    @property
    def request(self) -> GenerationRequest:
        return self.job.prepared.request


@dataclass
class _Row:
    """What one sequence put in this step's batch: `fed` tokens, logits to sample from batch row `row` on (-1:
    none); `scored`: the batch row of the first of `fed` rows whose logits score the prompt's next tokens."""

    seq: Sequence
    fed: int
    row: int
    scored: int = -1


class BatchRunner:
    def __init__(self, name: str, model: LlamaModel, config: BatchConfig):
        self.name = name
        self.config = config
        self._vocab = model.vocab
        self._n_vocab = model.n_vocab()
        self._ctx = LlamaContext(model=model, params=self._context_params(config), verbose=False)
        self._memory = llama_cpp.llama_get_memory(self._ctx.ctx)
        self._batch = llama_cpp.llama_batch_init(N_BATCH, 0, 1)
        self.cache = PrefixCache(self._ctx.ctx, config.parallel, config.prefix_cache_bytes)
        self.jobs = JobQueue(name, config.max_queue)
        self._pieces: dict[tuple[int, bool], bytes] = {}
        self._logprobs = Logprobs(self._n_vocab, self.piece)
        self._running: list[Sequence] = []
        self._out = Outbox()
        self._prefill_cap = N_BATCH
        self._drafts_ok = True
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"fmstack-{name}", daemon=True)
        self._thread.start()

    @staticmethod
    def _context_params(config: BatchConfig) -> llama_cpp.llama_context_params:
        p = llama_cpp.llama_context_default_params()
        p.n_ctx = config.kv_tokens
        p.n_batch = p.n_ubatch = N_BATCH
        p.n_seq_max = config.parallel
        p.kv_unified = True
        p.n_threads = p.n_threads_batch = config.threads
        # flash attention skips the cells of other sequences (without it every step multiplies by the whole used
        # range of the shared cache: 7.5 vs 10.9 ms a token for SmolLM2 next to 1,000 cells of another sequence),
        # and it sums a sequence's cells in their order wherever they lie, so neighbours change its logits only
        # where ggml picks another kernel for the batch's shape (one query row with 512+ cells, or 64+ rows)
        p.flash_attn_type = (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if config.flash_attn else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        p.no_perf = True
        return p

    # -- callers' side -------------------------------------------------------------------------------------------

    @property
    def waiting(self) -> int:
        return self.jobs.waiting

    def submit(self, prepared: Prepared) -> AsyncIterator[Event]:
        return self.jobs.submit(prepared)

    def piece(self, token: int, special: bool = False) -> bytes:
        """A token's bytes (llama.cpp's pieces carry their own leading spaces), remembered: the vocabulary is
        fixed and a dict lookup is cheaper than a call into llama.cpp per token. `special`: a special token's
        text too (a tool-call tag the answer must show), else it renders empty."""
        if (data := self._pieces.get((token, special))) is None:
            data = self._pieces[token, special] = token_piece(self._vocab, token, special)
        return data

    def close(self) -> None:
        """Stop at the next step: running and waiting streams end without a Finish (the caller sees them cut)."""
        self._closing.set()
        self.jobs.close()
        self._thread.join(timeout=30)
        if not self._thread.is_alive():
            llama_cpp.llama_batch_free(self._batch)
            self._ctx.close()

    # -- the worker ----------------------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._closing.is_set() and self._admit():
                self._drop_cancelled()
                if self._running:
                    self._step()
                self._out.flush()
        finally:
            for seq in list(self._running):
                self._out.put(seq.job, END)
                self._retire(seq, keep=False)
            while (job := self._next_waiting()) is not None:
                self._out.put(job, END)
            self._out.flush()

    def _next_waiting(self) -> Job | None:
        with contextlib.suppress(queue.Empty):
            return self.jobs.get(block=False)
        return None

    def _admit(self) -> bool:
        """Start waiting jobs while slots are free (block when nothing runs). False once closed."""
        while len(self._running) < self.config.parallel:
            try:
                job = self.jobs.get(block=not self._running)
            except queue.Empty:
                return True
            if job is None:
                return False
            self._start(job)
        return True

    def _start(self, job: Job) -> None:
        p = job.prepared
        try:
            sampler = SequenceSampler(p.request, self._vocab, self._n_vocab, p.constraint)
        except Exception as exc:
            self._out.put(job, exc)
            self._out.put(job, END)
            return
        # the prompt's log-probabilities need the logits of every prompt position: no cached prefix then
        slot, reused = self.cache.acquire(p.tokens, share=not p.request.prompt_logprobs)
        speculate = p.request.speculative if p.request.speculative is not None else self.config.speculative
        drafter = Drafter(slot.tokens) if speculate else None
        seq = Sequence(job, slot, sampler, TextAssembler(p.request.stop), reused, drafter)
        if p.request.prompt_logprobs:
            seq.scored = [self._logprobs.unscored(p.tokens[0])]  # nothing before the first token predicts it
        self._running.append(seq)

    def _drop_cancelled(self) -> None:
        """A stream closed by its reader frees its slot and KV cells before the next step."""
        for seq in [s for s in self._running if s.job.cancel.is_set()]:
            self._retire(seq, keep=False)

    def _step(self) -> None:
        try:
            rows = self._plan()
            rc = COMPUTE.call(llama_cpp.llama_decode, self._ctx.ctx, self._batch)
            if rc == 1:  # no room in the KV cache; nothing was decoded
                self._relieve(rows)
                return
            if rc != 0:
                raise EngineError(f"llama_decode failed with status {rc}.")
            self._prefill_cap, self._drafts_ok = min(N_BATCH, 2 * self._prefill_cap), True
            for r in rows:
                self._advance(r)
        except Exception as exc:  # every running caller gets it; the runner goes on with the next requests
            log.exception("decode step failed")
            for seq in list(self._running):
                self._out.put(seq.job, exc)
                self._out.put(seq.job, END)
                self._retire(seq, keep=False)

    def _plan(self) -> list[_Row]:
        """Fill the batch: each decoding sequence's last token (and draft), then prompt chunks, oldest first."""
        self._batch.n_tokens = 0
        rows: list[_Row] = []
        decoding = [s for s in self._running if s.generated]
        drafting = self._drafts_ok and len(decoding) <= SPECULATE_MAX_STREAMS
        for seq in decoding:
            seq.draft = self._draft(seq, len(decoding)) if drafting and seq.drafter else []
            rows.append(self._add(seq, [seq.slot.tokens[seq.slot.n], *seq.draft], logits_from=0))
        budget = min(N_BATCH - self._batch.n_tokens, self._prefill_cap, PREFILL_CHUNK if decoding else N_BATCH)
        for seq in self._running:
            if seq.generated or budget <= 0:
                continue
            seq.draft = []
            slot = seq.slot
            # scoring the prompt asks for logits on every row: a smaller chunk keeps llama.cpp's output buffer small
            take = budget if seq.scored is None else min(budget, PREFILL_CHUNK)
            chunk = slot.tokens[slot.n : slot.n + take]
            last = slot.n + len(chunk) == len(slot.tokens)
            rows.append(self._add(seq, chunk, len(chunk) - 1 if last else len(chunk), seq.scored is not None))
            budget -= len(chunk)
        return rows

    def _draft(self, seq: Sequence, n_decoding: int) -> list[int]:
        left = seq.prepared.max_tokens - seq.generated - 1  # the verified run plus one sample stays in max_tokens
        room = (N_BATCH - self._batch.n_tokens) - n_decoding  # every decoding sequence still needs its row
        return seq.drafter.propose(min(left, room))

    def _add(self, seq: Sequence, tokens: list[int], logits_from: int, score: bool = False) -> _Row:
        """Put `tokens` in the batch with logits from `logits_from` on (every row when `score`)."""
        b, start, seq_id, pos = self._batch, self._batch.n_tokens, seq.slot.seq_id, seq.slot.n
        for i, token in enumerate(tokens):
            j = start + i
            b.token[j] = token
            b.pos[j] = pos + i
            b.n_seq_id[j] = 1
            b.seq_id[j][0] = seq_id
            b.logits[j] = score or i >= logits_from
        b.n_tokens = start + len(tokens)
        return _Row(seq, len(tokens), start + logits_from if logits_from < len(tokens) else -1, start if score else -1)

    def _relieve(self, rows: list[_Row]) -> None:
        """Make room for the next try of this step (see the module docstring for the order)."""
        if any(r.seq.draft for r in rows):
            self._drafts_ok = False
            return
        prefill = sum(r.fed for r in rows if not r.seq.generated)
        if prefill > 1:
            self._prefill_cap = max(1, prefill // 2)
            return
        self._finish(max(self._running, key=lambda s: s.slot.n), "length", keep=False)

    def _advance(self, r: _Row) -> None:
        """Commit what the batch put in the cache, then sample: a prefill's last row, or a decoding sequence's
        row and then its draft rows while each sample equals the drafted token (drafted cells past the last
        such token are dropped)."""
        seq, slot, draft = r.seq, r.seq.slot, r.seq.draft
        if r.scored >= 0:
            self._score(seq, r, slot.n)
        slot.n += r.fed - len(draft)
        if r.row < 0:
            return
        if seq.prepared.max_tokens == 0:  # only the prompt was asked for (its log-probabilities)
            self._finish(seq, "length")
            return
        accepted, reason = 0, None
        for i in range(len(draft) + 1):
            token = seq.sampler.sample(self._ctx.ctx, r.row + i)
            reason = self._take(seq, token, r.row + i)
            if reason or i == len(draft) or token != draft[i]:
                break
            slot.n += 1  # the drafted token's cells hold the token that was sampled
            accepted += 1
        if draft:
            seq.drafter.record(len(draft), accepted)
        if reason:
            self._finish(seq, reason)
        elif draft:
            llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, slot.n, -1)

    def _score(self, seq: Sequence, r: _Row, at: int) -> None:
        """The log-probability of each prompt token after the `r.fed` ones fed from position `at` (row i's logits
        predict token at + i + 1); once the whole prompt is read, they go to the caller ahead of any text."""
        tokens, top = seq.prepared.tokens, seq.request.top_logprobs
        for i in range(min(r.fed, len(tokens) - 1 - at)):
            seq.scored.append(self._logprobs.entry(self._ctx.ctx, r.scored + i, tokens[at + i + 1], top))
        if at + r.fed == len(tokens):
            self._out.put(seq.job, Delta("", seq.scored, tokens=0, prompt=True))

    def _take(self, seq: Sequence, token: int, row: int) -> str | None:
        """Emit a sampled token; the finish reason when it ends the sequence."""
        if llama_cpp.llama_vocab_is_eog(self._vocab, token):
            return "stop"
        r = seq.request
        logprob = self._logprobs.entry(self._ctx.ctx, row, token, r.top_logprobs) if r.logprobs else None
        seq.generated += 1
        seq.slot.tokens.append(token)
        if (delta := seq.text.push(self.piece(token, token in seq.prepared.preserve), logprob)) is not None:
            self._out.put(seq.job, delta)
        if seq.text.stopped:
            return "stop"
        if seq.generated >= seq.prepared.max_tokens:
            return "length"
        return None

    def _finish(self, seq: Sequence, reason: str, keep: bool = True) -> None:
        if (delta := seq.text.flush()) is not None:
            self._out.put(seq.job, delta)
        drafter = seq.drafter
        self._out.put(
            seq.job,
            Finish(
                reason,
                seq.prepared.prompt_tokens,
                seq.generated,
                cached_tokens=seq.cached,
                draft_tokens=drafter.drafted if drafter else 0,
                accepted_tokens=drafter.accepted if drafter else 0,
            ),
        )
        self._out.put(seq.job, END)
        self._retire(seq, keep)

    def _retire(self, seq: Sequence, keep: bool) -> None:
        with contextlib.suppress(ValueError):
            self._running.remove(seq)
        seq.sampler.close()
        if keep:  # cells of drafted tokens past the kept ones are not part of the cached prefix
            llama_cpp.llama_memory_seq_rm(self._memory, seq.slot.seq_id, seq.slot.n, -1)
        self.cache.release(seq.slot, keep)


def token_piece(vocab: llama_cpp.llama_vocab_p, token: int, special: bool = False) -> bytes:
    """The bytes of one token as text (special tokens render empty, as in the text of a reply, unless asked)."""
    size = 64
    while True:
        buffer = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_token_to_piece(vocab, token, buffer, size, 0, special)
        if n >= 0:
            return buffer.raw[:n]
        size = -n
