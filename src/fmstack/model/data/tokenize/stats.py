"""How a tokenizer cuts a corpus: tokens per word and per character, vocabulary coverage, unknown tokens and the
distribution of document lengths, counted so that statistics of shards add up to the statistics of the whole."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fmstack.model.data.tokenize.tokenizer import BATCH, TextTokenizer, encode_stream

RULE_OF_THUMB_TOKENS_PER_WORD = 100 / 75  # "100 tokens are about 75 English words" (OpenAI's rule)


@dataclass
class TokenStats:
    """How a tokenizer cuts a corpus. Sequence lengths are kept as exact counts per length (few distinct values),
    so percentiles are exact and stats of shards add up to the stats of the whole."""

    tokenizer: str = ""
    vocab_size: int = 0
    unk_id: int | None = None
    documents: int = 0
    words: int = 0
    characters: int = 0
    tokens: int = 0
    id_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    lengths: Counter[int] = field(default_factory=Counter)

    def update(self, text: str, ids: list[int]) -> None:
        self.documents += 1
        self.words += len(text.split())
        self.characters += len(text)
        self.tokens += len(ids)
        self.lengths[len(ids)] += 1
        if ids:
            counts = np.bincount(ids, minlength=len(self.id_counts))
            self.id_counts = _add_padded(self.id_counts, counts)

    def __add__(self, other: TokenStats) -> TokenStats:
        if self.tokenizer and other.tokenizer and self.tokenizer != other.tokenizer:
            raise ValueError(f"cannot add stats of tokenizers {self.tokenizer!r} and {other.tokenizer!r}")
        return TokenStats(
            self.tokenizer or other.tokenizer,
            max(self.vocab_size, other.vocab_size),
            self.unk_id if self.unk_id is not None else other.unk_id,
            self.documents + other.documents,
            self.words + other.words,
            self.characters + other.characters,
            self.tokens + other.tokens,
            _add_padded(self.id_counts, other.id_counts),
            self.lengths + other.lengths,
        )

    def __radd__(self, other: Any) -> TokenStats:
        return self if other == 0 else NotImplemented  # so that sum(shard_stats) works

    @property
    def tokens_per_word(self) -> float:
        return self.tokens / self.words if self.words else 0.0

    @property
    def words_per_token(self) -> float:
        return self.words / self.tokens if self.tokens else 0.0

    @property
    def chars_per_token(self) -> float:
        return self.characters / self.tokens if self.tokens else 0.0

    @property
    def vocab_coverage(self) -> float:
        """Fraction of the vocabulary that occurs at least once: low means a tokenizer trained on other text."""
        return int(np.count_nonzero(self.id_counts)) / self.vocab_size if self.vocab_size else 0.0

    @property
    def unk_fraction(self) -> float | None:
        """Fraction of tokens that are the unknown token (text the tokenizer cannot represent); None without one."""
        if self.unk_id is None:
            return None
        unk = int(self.id_counts[self.unk_id]) if self.unk_id < len(self.id_counts) else 0
        return unk / self.tokens if self.tokens else 0.0

    def percentile(self, p: float) -> int:
        """Nearest-rank percentile of tokens per document (numpy's method="inverted_cdf"), exact."""
        if not self.lengths:
            return 0
        values = sorted(self.lengths)
        cumulative = np.cumsum([self.lengths[v] for v in values])
        rank = max(1, math.ceil(p / 100 * self.documents))
        return int(values[int(np.searchsorted(cumulative, rank))])

    def histogram(self, bins: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """(counts, edges) of tokens per document, as np.histogram; default bins are powers of two, which read
        directly as context lengths."""
        values = np.fromiter(self.lengths.keys(), np.int64, len(self.lengths))
        weights = np.fromiter(self.lengths.values(), np.int64, len(self.lengths))
        if bins is None:
            top = int(values.max()) if len(values) else 1
            bins = np.array([0] + [2**k for k in range(max(1, math.ceil(math.log2(max(top, 2)))) + 1)])
        counts, edges = np.histogram(values, bins=bins, weights=weights)
        return counts.astype(np.int64), edges

    def to_dict(self) -> dict[str, Any]:
        counts, edges = self.histogram()
        return {
            "tokenizer": self.tokenizer,
            "documents": self.documents,
            "words": self.words,
            "characters": self.characters,
            "tokens": self.tokens,
            "tokens_per_word": round(self.tokens_per_word, 4),
            "words_per_token": round(self.words_per_token, 4),
            "rule_of_thumb_tokens_per_word": round(RULE_OF_THUMB_TOKENS_PER_WORD, 4),
            "tokens_per_word_vs_rule_of_thumb": round(self.tokens_per_word / RULE_OF_THUMB_TOKENS_PER_WORD, 4),
            "chars_per_token": round(self.chars_per_token, 4),
            "vocab_size": self.vocab_size,
            "vocab_used": int(np.count_nonzero(self.id_counts)),
            "vocab_coverage": round(self.vocab_coverage, 4),
            "unk_fraction": self.unk_fraction,
            "length_percentiles": {f"p{p}": self.percentile(p) for p in (50, 90, 99)}
            | {"max": max(self.lengths, default=0)},
            "histogram": {"edges": [int(e) for e in edges], "counts": counts.tolist()},
        }


def token_stats(tokenizer: TextTokenizer, texts: Iterable[str], batch_size: int = BATCH) -> TokenStats:
    """Statistics of `texts` under `tokenizer`, in one streaming pass (texts are not kept: the tee between the
    encoder and the counter holds at most one batch)."""
    stats = TokenStats(tokenizer.name, tokenizer.vocab_size, tokenizer.unk_id)
    for_stats, for_ids = itertools.tee(texts)
    for text, ids in zip(for_stats, encode_stream(tokenizer, for_ids, batch_size), strict=True):
        stats.update(text, ids)
    return stats


def _add_padded(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros(max(len(a), len(b)), np.int64)
    out[: len(a)] += a
    out[: len(b)] += b
    return out
