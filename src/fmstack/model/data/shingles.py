"""Documents as sets of word n-gram hashes (shingles), computed for a whole batch in NumPy, without one Python
object per word.

Why not `re.findall` and a hash per word: making 300 Python strings per document costs ~0.35 µs each — more than
all of MinHash. Here a batch of documents is one byte array; word boundaries come from a lookup table, word hashes
from a polynomial whose prefix sums `cumsum` computes (Σ b_i·P^i, rescaled by P^-start: P is odd, so it has an
inverse modulo 2^64), and shingles from consecutive word hashes of the same document.

What a word is (the same in `dedup_words`, the readable reference the tests compare against): after NFKC and
lower-casing, a maximal run of ASCII letters, digits and underscores or of non-ASCII characters, where Latin-1
punctuation and symbols (U+0080–U+00BF) and the General Punctuation block (U+2000–U+206F: dashes, curly quotes,
ellipsis) separate words as ASCII punctuation does. So case, punctuation and spacing never make a document new.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

_U64 = np.uint64
_WORD = re.compile(r"[a-z0-9_\u00c0-\u1fff\u2070-\U0010ffff]+")
_P = 0x100000001B3  # odd: invertible modulo 2^64
_P_INV = pow(_P, -1, 2**64)
_MULT = _U64(0x9E3779B97F4A7C15)
_JOIN = "\x00"  # between documents; removed from the texts first


def _word_bytes() -> np.ndarray:
    table = np.zeros(256, dtype=bool)
    for c in b"abcdefghijklmnopqrstuvwxyz0123456789_":
        table[c] = True
    table[0x80:] = True  # bytes of non-ASCII characters; the punctuation among them is unmarked separately
    return table


_IS_WORD = _word_bytes()


def normalize(text: str) -> str:
    """NFKC (only when needed: the check is cheaper than the normalization) and lower case."""
    if not text.isascii() and not unicodedata.is_normalized("NFKC", text):
        text = unicodedata.normalize("NFKC", text)
    return text.lower()


def dedup_words(text: str) -> list[str]:
    """The words of a document, one by one: the reference for what `fingerprints` computes in bulk."""
    return _WORD.findall(normalize(text))


def normalize_for_dedup(text: str) -> str:
    return " ".join(dedup_words(text))


@dataclass
class Fingerprints:
    """Per document: a 64-bit hash of its word sequence (equal for exact duplicates after normalization) and its
    32-bit shingle hashes, all documents' shingles in one array cut by `offsets` (n + 1 entries)."""

    exact: np.ndarray
    shingles: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.exact)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.shingles[self.offsets[i] : self.offsets[i + 1]]


@lru_cache(maxsize=4)
def _powers(base: int, n: int) -> np.ndarray:
    """base^0 … base^(n-1) modulo 2^64 (cumprod wraps like the hardware does)."""
    out = np.full(n, base, dtype=_U64)
    out[0] = 1
    with np.errstate(over="ignore"):
        return np.cumprod(out, dtype=_U64)


def _power_table(n: int) -> tuple[np.ndarray, np.ndarray]:
    size = 1 << max(16, (n - 1).bit_length())  # a few sizes only, so the cache keeps them
    return _powers(_P, size)[:n], _powers(_P_INV, size)[:n]


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: every output bit depends on every input bit."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
        return x ^ (x >> _U64(31))


def _separators(data: np.ndarray) -> np.ndarray:
    """Which bytes belong to words: the table, then the non-ASCII punctuation taken back out."""
    is_word = _IS_WORD[data]
    latin = np.flatnonzero((data[:-1] == 0xC2) & (data[1:] >= 0x80) & (data[1:] <= 0xBF))
    general = np.flatnonzero((data[:-2] == 0xE2) & ((data[1:-1] == 0x80) | (data[1:-1] == 0x81)))
    for idx, width in ((latin, 2), (general, 3)):
        for k in range(width):
            is_word[idx + k] = False
    return is_word


def _words(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) byte positions of every word."""
    w = _separators(data)
    starts = np.flatnonzero(w[1:] & ~w[:-1]) + 1
    ends = np.flatnonzero(w[:-1] & ~w[1:]) + 1
    if len(w) and w[0]:
        starts = np.concatenate(([0], starts))
    if len(w) and w[-1]:
        ends = np.concatenate((ends, [len(w)]))
    return starts, ends


def _span_hashes(values: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The polynomial Σ v_i·P^(i-start) of each span [start, end) of `values`, independent of where it lies."""
    pw, inv = _power_table(len(values) + 1)  # + 1: an empty span may start at the very end
    with np.errstate(over="ignore"):
        prefix = np.concatenate(([_U64(0)], np.cumsum(values.astype(_U64) * pw[: len(values)], dtype=_U64)))
        return (prefix[ends] - prefix[starts]) * inv[starts]


def fingerprints(texts: Sequence[str], ngram: int) -> Fingerprints:
    """Exact hashes and shingles of a batch (keep batches to a few MB: the work arrays are ~40 bytes per byte).

    A document shorter than `ngram` words is one shingle of all its words, so that short duplicates still match;
    an empty one has no shingles."""
    n = len(texts)
    data = np.frombuffer(_JOIN.join(normalize(t.replace(_JOIN, " ")) for t in texts).encode(), dtype=np.uint8)
    doc_ends = np.flatnonzero(data == 0)
    starts, ends = _words(data)
    word_hash = _mix(_span_hashes(data, starts, ends))
    doc = np.searchsorted(doc_ends, starts)  # the document of each word
    words_per_doc = np.bincount(doc, minlength=n)
    first_word = np.concatenate(([0], np.cumsum(words_per_doc)))
    exact = _mix(_span_hashes(word_hash, first_word[:-1], first_word[1:]) ^ words_per_doc.astype(_U64))
    shingles, counts = _shingles(word_hash, doc, words_per_doc, first_word, ngram)
    return Fingerprints(exact, shingles, np.concatenate(([0], np.cumsum(counts))))


def _shingles(
    word_hash: np.ndarray, doc: np.ndarray, words_per_doc: np.ndarray, first_word: np.ndarray, ngram: int
) -> tuple[np.ndarray, np.ndarray]:
    """Windows of `ngram` consecutive words inside one document, then one shingle for each short document."""
    m = max(0, len(word_hash) - ngram + 1)
    out = np.zeros(m, dtype=_U64)
    with np.errstate(over="ignore"):
        for j in range(ngram):
            out = (out ^ word_hash[j : j + m]) * _MULT
    full = out[doc[:m] == doc[ngram - 1 : ngram - 1 + m]] if m else out
    counts = np.where(words_per_doc >= ngram, words_per_doc - ngram + 1, np.minimum(words_per_doc, 1))
    short = np.flatnonzero((words_per_doc > 0) & (words_per_doc < ngram))
    if len(short):
        extra = np.zeros(len(short), dtype=_U64)
        with np.errstate(over="ignore"):
            for k, d in enumerate(short):
                for h in word_hash[first_word[d] : first_word[d + 1]]:
                    extra[k] = (extra[k] ^ h) * _MULT
        before = np.concatenate(([0], np.cumsum(np.where(words_per_doc >= ngram, counts, 0))))[short]
        full = np.insert(full, before, extra)
    return (full >> _U64(32)).astype(np.uint32), counts


def shingle_hashes(text: str, ngram: int) -> np.ndarray:
    """The shingles of one document (a batch of one)."""
    return fingerprints([text], ngram).shingles
