"""Speculative decoding by prompt lookup: draft the tokens that followed the latest earlier occurrence of the
sequence's last n-gram (in the prompt or in the output so far), and let the model verify them in one batch.

RAG answers quote their context and code edits copy the code they were given, so a draft is often right; in free
chat no n-gram repeats and nothing is drafted (so it costs nothing there).

Verification samples each position in turn with the request's own sampler and keeps drafted tokens while they
equal what was sampled; the first differing sample is kept too and ends the run. Every kept token is therefore
one the sampler drew from the model's distribution given the tokens before it, with the same random stream, in
the same order as without speculation: greedy text is identical, and sampled text has the same distribution
(for a one-token-per-position draft this is exactly the speculative-sampling acceptance rule).

Off by default (`FMSTACK_SPECULATIVE`, or `speculative` per request): on CPU a draft row costs nearly a decode
step, because ggml's quantized matmul does the work of every row again. Measured with one thread, tokens per
CPU-second, speculation on / off: SmolLM2 on a RAG answer quoting its context 52 / 81 (15 of 53 drafts kept),
on a poem 76 / 82 (57 of 89 kept); Qwen2.5-0.5B 23 / 31 and 34 / 33. It pays where a verified row is cheap next
to a decode step (a GPU, a model too big for the caches) and the text copies long runs.
"""

from __future__ import annotations

from dataclasses import dataclass

NGRAM_MAX = 3
NGRAM_MIN = 1
DRAFT_MAX = 8


@dataclass
class Drafter:
    """The n-gram index of one sequence's tokens, and how many of its drafts were accepted."""

    tokens: list[int]
    draft_max: int = DRAFT_MAX
    drafted: int = 0
    accepted: int = 0

    def __post_init__(self) -> None:
        self._index: list[dict[tuple[int, ...], int]] = [{} for _ in range(NGRAM_MAX + 1)]
        self._indexed = 0
        self._next_len = self.draft_max

    def _catch_up(self) -> None:
        """Index the n-grams that now have a following token: each maps to where that token is (the latest
        occurrence wins)."""
        tokens = self.tokens
        for follow in range(max(self._indexed, 1), len(tokens)):
            for n in range(NGRAM_MIN, min(NGRAM_MAX, follow) + 1):
                self._index[n][tuple(tokens[follow - n : follow])] = follow
        self._indexed = max(self._indexed, len(tokens))

    def propose(self, limit: int) -> list[int]:
        """Up to `limit` drafted tokens (none when the last n-gram never occurred before)."""
        self._catch_up()
        tokens, k = self.tokens, min(limit, self._next_len)
        if k <= 0:
            return []
        for n in range(min(NGRAM_MAX, len(tokens)), NGRAM_MIN - 1, -1):
            follow = self._index[n].get(tuple(tokens[len(tokens) - n :]))
            if follow is not None:
                return tokens[follow : follow + k]
        return []

    def record(self, drafted: int, accepted: int) -> None:
        """Count a verification; draft longer after a full hit, shorter after a miss (a wrong draft costs a
        wider batch row for nothing)."""
        self.drafted += drafted
        self.accepted += accepted
        self._next_len = min(self.draft_max, 2 * drafted) if accepted == drafted else max(1, accepted + 1)
