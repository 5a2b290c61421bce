"""Which token prefixes can be reused, and how a new prompt gets their KV cells.

Two places hold prefixes. A running sequence's cells are in the KV cache under its sequence id (its slot); a new
prompt sharing its prefix gets those cells with `seq_cp`, which in a unified cache only adds the new sequence id
to them (shared, not copied). A finished sequence's cells are saved to host memory (`llama_state_seq_get_data`,
a copy of its K and V rows) and removed from the KV cache; a later prompt starting with the same tokens (the next
turn of the conversation, another request with the same system prompt or RAG context) has them copied back
(`llama_state_seq_set_data`) and prefills only the tokens after the common prefix.

Why not leave finished sequences' cells in the KV cache: llama.cpp attends every step over the cache's used range,
so each idle cached prefix slows every later decode, also of requests that never reuse it (SmolLM2, one stream:
126 tok/s fresh, 105 next to 13,000 idle cells). A copy back costs milliseconds, a prefill of the same tokens
seconds. The host copies are kept up to a byte budget, least recently used dropped first.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field

import llama_cpp

MIN_REUSE = 32  # fewer shared tokens prefill in about the time of one decode step: not worth a copy


@dataclass(eq=False)
class Slot:
    """One sequence id of a running request: its tokens, of which the first `n` have their KV cells in the cache."""

    seq_id: int
    tokens: list[int] = field(default_factory=list)
    n: int = 0
    busy: bool = False

    @property
    def cached(self) -> list[int]:
        return self.tokens[: self.n]


@dataclass(eq=False)
class Saved:
    """A finished sequence's prefix in host memory: its tokens and llama.cpp's state of their KV cells."""

    tokens: list[int]
    state: ctypes.Array

    @property
    def nbytes(self) -> int:
        return len(self.state)


class PrefixCache:
    def __init__(self, ctx: llama_cpp.llama_context_p, n_slots: int, budget_bytes: int):
        self._ctx = ctx
        self._memory = llama_cpp.llama_get_memory(ctx)
        self.slots = [Slot(i) for i in range(n_slots)]
        self.budget_bytes = budget_bytes
        self.saved: list[Saved] = []  # least recently used first
        self.saved_bytes = 0

    def acquire(self, prompt: list[int], share: bool = True) -> tuple[Slot, int]:
        """A free slot holding the longest known prefix of `prompt` (at most all but its last token, whose logits
        the first sample needs), and the number of tokens reused. A free slot must exist. `share` False: nothing
        reused, for a request that needs the logits of every prompt position (reused cells have none)."""
        if not any(s.busy for s in self.slots):
            # nothing is in the cache: start placing cells from its first one again (see _worth_restoring)
            llama_cpp.llama_memory_clear(self._memory, False)
        target = next(s for s in self.slots if not s.busy)
        reuse = 0
        if share:
            limit = len(prompt) - 1
            running, n_running = self._best_running(prompt, limit)
            saved, n_saved = self._best_saved(prompt, limit)
            if n_running >= n_saved and n_running:
                llama_cpp.llama_memory_seq_cp(self._memory, running.seq_id, target.seq_id, 0, n_running)
                reuse = n_running
            elif n_saved and self._restore(saved, target.seq_id):
                llama_cpp.llama_memory_seq_rm(self._memory, target.seq_id, n_saved, -1)
                reuse = n_saved
        target.tokens, target.n, target.busy = list(prompt), reuse, True
        return target, reuse

    def _best_running(self, prompt: list[int], limit: int) -> tuple[Slot | None, int]:
        best, best_len = None, 0
        for slot in self.slots:
            if slot.busy and (n := _common_prefix(slot.cached, prompt, limit)) > best_len:
                best, best_len = slot, n
        return best, best_len

    def _best_saved(self, prompt: list[int], limit: int) -> tuple[Saved | None, int]:
        """The saved prefix worth restoring that shares the most tokens with `prompt`; of equals, the shortest."""
        best, best_len = None, 0
        for entry in self.saved:
            n = _common_prefix(entry.tokens, prompt, limit)
            longer = n > best_len or (n == best_len and best is not None and len(entry.tokens) < len(best.tokens))
            if longer and _worth_restoring(entry, n):
                best, best_len = entry, n
        return best, best_len

    def _restore(self, entry: Saved, seq_id: int) -> bool:
        """Copy a saved prefix's cells back under `seq_id`; False when the cache has no room for them."""
        if llama_cpp.llama_state_seq_set_data(self._ctx, entry.state, len(entry.state), seq_id) == 0:
            llama_cpp.llama_memory_seq_rm(self._memory, seq_id, -1, -1)
            return False
        self.saved.remove(entry)
        self.saved.append(entry)  # now the most recently used
        return True

    def release(self, slot: Slot, keep: bool) -> None:
        """The sequence is over: save its cells to host memory when `keep`, then free them in the KV cache."""
        del slot.tokens[slot.n :]  # a last sampled token never went through the model: it has no cells
        if keep and slot.n:
            self._save(slot)
        llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
        slot.tokens, slot.n, slot.busy = [], 0, False

    def _save(self, slot: Slot) -> None:
        size = llama_cpp.llama_state_seq_get_size(self._ctx, slot.seq_id)
        if size > self.budget_bytes:
            return
        state = (ctypes.c_uint8 * size)()
        if llama_cpp.llama_state_seq_get_data(self._ctx, state, size, slot.seq_id) != size:
            return
        tokens = slot.cached
        # a saved prefix of these tokens (the conversation's previous turn) is covered by the new one
        for old in [e for e in self.saved if e.tokens == tokens[: len(e.tokens)]]:
            self._drop(old)
        self.saved.append(Saved(tokens, state))
        self.saved_bytes += size
        while self.saved_bytes > self.budget_bytes:
            self._drop(self.saved[0])

    def _drop(self, entry: Saved) -> None:
        self.saved.remove(entry)
        self.saved_bytes -= entry.nbytes


def _worth_restoring(entry: Saved, reuse: int) -> bool:
    """Whether copying `entry` back is worth its `reuse` shared tokens. A copy places all of its cells, and those
    past the shared prefix are dropped again, leaving a hole: llama.cpp then attends over the cells up to the
    highest one in use at every step of the new sequence, so restoring a long answer to reuse the chat template's
    first tokens slows the whole decode (SmolLM2: 107 -> 88 tok/s) to save a prefill of a few tokens."""
    return reuse >= MIN_REUSE and reuse * 4 >= len(entry.tokens)


def _common_prefix(a: list[int], b: list[int], limit: int) -> int:
    n = min(len(a), len(b), limit)
    for i in range(n):
        if a[i] != b[i]:
            return i
    return max(n, 0)
