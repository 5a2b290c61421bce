"""Which token prefixes the KV cache holds, per llama.cpp sequence id, and what a new prompt can reuse.

The context has more sequence ids than running sequences. A finished sequence keeps its cells under its id
(an idle slot) until the slot or its cells are needed, so the next turn of a conversation, or another request
with the same system prompt or RAG context, finds its prefix there. Reusing it costs nothing: in a unified KV
cache `seq_cp` only adds the new sequence id to the source's cells, so the prefix is shared, not copied, and
prefill covers only the tokens after it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import llama_cpp


@dataclass(eq=False)
class Slot:
    """One sequence id: the tokens known for it, of which the first `n` have their KV cells in the cache."""

    seq_id: int
    tokens: list[int] = field(default_factory=list)
    n: int = 0
    busy: bool = False
    last_used: int = 0

    @property
    def cached(self) -> list[int]:
        return self.tokens[: self.n]


class PrefixCache:
    def __init__(self, memory: llama_cpp.llama_memory_t, n_slots: int):
        self._memory = memory
        self.slots = [Slot(i) for i in range(n_slots)]
        self._clock = itertools.count(1)

    def acquire(self, prompt: list[int], share: bool = True) -> tuple[Slot, int]:
        """A slot holding the longest cached prefix of `prompt` (at most all but its last token, whose logits
        the first sample needs), and the number of tokens reused. A free slot must exist. `share` False: an empty
        slot, for a request that needs the logits of every prompt position (cached cells have none)."""
        source, reuse = self._best_match(prompt) if share else (None, 0)
        # an idle slot whose whole cache is a prefix of the prompt (the next turn of its conversation) is taken
        # over; otherwise the prefix is shared into a free slot, so the source keeps its longer cache
        extends = source is not None and not source.busy and reuse == source.n
        target = source if extends else self._free_slot()
        if target is source:
            llama_cpp.llama_memory_seq_rm(self._memory, target.seq_id, reuse, -1)
        else:
            self._clear(target)
            if reuse:
                llama_cpp.llama_memory_seq_cp(self._memory, source.seq_id, target.seq_id, 0, reuse)
        target.tokens, target.n, target.busy = list(prompt), reuse, True
        return target, reuse

    def _best_match(self, prompt: list[int]) -> tuple[Slot | None, int]:
        best, best_len = None, 0
        for slot in self.slots:
            n = _common_prefix(slot.cached, prompt, len(prompt) - 1)
            if n > best_len or (n == best_len and best is not None and best.busy and not slot.busy):
                best, best_len = slot, n
        return best, best_len

    def _free_slot(self) -> Slot:
        """An empty slot, else the idle one used longest ago (its cache is the least likely to be asked for)."""
        idle = [s for s in self.slots if not s.busy]
        return min(idle, key=lambda s: (s.n > 0, s.last_used))

    def release(self, slot: Slot, keep: bool) -> None:
        """The sequence is over: keep its cells as a cached prefix, or free them at once."""
        slot.busy = False
        slot.last_used = next(self._clock)
        del slot.tokens[slot.n :]  # a last sampled token never went through the model: it has no cells
        if not keep:
            self._clear(slot)

    def evict(self) -> bool:
        """Free the cells of the idle slot used longest ago; False when no idle slot holds any."""
        idle = [s for s in self.slots if not s.busy and s.n]
        if not idle:
            return False
        self._clear(min(idle, key=lambda s: s.last_used))
        return True

    def _clear(self, slot: Slot) -> None:
        llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
        slot.tokens, slot.n = [], 0


def _common_prefix(a: list[int], b: list[int], limit: int) -> int:
    n = min(len(a), len(b), limit)
    for i in range(n):
        if a[i] != b[i]:
            return i
    return max(n, 0)
