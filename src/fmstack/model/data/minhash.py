"""MinHash signatures and LSH banding, vectorized over whole batches of documents.

Why our own and not datasketch's `MinHash`: datasketch hashes one document at a time with 64-bit arithmetic modulo
a 61-bit prime. Here a batch of documents becomes one array of 32-bit shingle hashes, and each of the k hash
functions is an affine map `a·x + b mod 2^32` (a odd, so a permutation of the 32-bit values) computed with
numpy's wrapping uint32 arithmetic, one hash function at a time over the whole batch: about 10× less work per
document.
`benchmarks/dedup.py` measures throughput and accuracy against datasketch on the same corpus, and
`tests/model/data/test_minhash.py` checks that the Jaccard estimates are as accurate as the 64-bit scheme's.
The inputs are already mixed 64-bit hashes (shingles.py), not structured keys, which is why a cheap
permutation family is enough.
The LSH theory — and datasketch's choice of bands and rows for a threshold — carries over unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from fmstack.model.data.shingles import Fingerprints

_U64 = np.uint64


@lru_cache(maxsize=8)
def permutations(num_perm: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The (a, b) of each hash function, a odd; fixed by the seed, so signatures made by different processes,
    runs and machines compare."""
    rng = np.random.Generator(np.random.PCG64(seed))
    a = rng.integers(0, 2**31, size=num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = rng.integers(0, 2**32, size=num_perm, dtype=np.uint32)
    return a, b


def signatures(shingles: Sequence[np.ndarray] | Fingerprints, num_perm: int = 128, seed: int = 1) -> np.ndarray:
    """Signatures (n_docs × num_perm, uint32) of a batch of documents, given as their shingle hashes.

    Each hash function maps the batch's shingles in one contiguous pass and `minimum.reduceat` takes each
    document's minimum: a 1-D reduceat over long runs is 5.5× faster than reducing 2-D blocks of all functions at
    once along their rows (0.39 s against 2.15 s for 20k documents, 5.6M shingles, 128 functions; same output).
    An empty document gets the all-ones signature (it matches only other empty documents)."""
    if isinstance(shingles, Fingerprints):
        x, offsets = shingles.shingles, shingles.offsets
    else:
        x = np.concatenate([np.asarray(s, dtype=np.uint32) for s in shingles] or [np.zeros(0, np.uint32)])
        offsets = np.concatenate(([0], np.cumsum([len(s) for s in shingles])))
    a, b = permutations(num_perm, seed)
    out = np.full((len(offsets) - 1, num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
    keep = np.flatnonzero(offsets[1:] > offsets[:-1])  # documents with shingles; their shingles are contiguous
    if not len(keep):
        return out
    starts, hashed = offsets[keep], np.empty(len(x), dtype=np.uint32)
    for k in range(num_perm):
        np.multiply(x, a[k], out=hashed)
        np.add(hashed, b[k], out=hashed)
        out[keep, k] = np.minimum.reduceat(hashed, starts)
    return out


@dataclass(frozen=True)
class LSHParams:
    """Bands × rows ≤ num_perm. Two documents become candidates when all rows of at least one band agree."""

    bands: int
    rows: int

    def band_hashes(self, sigs: np.ndarray) -> np.ndarray:
        """One 64-bit hash per band of each signature (n_docs × bands): what the LSH index stores. A wrapping
        polynomial over the band's rows, vectorized over all documents; a 64-bit collision between different
        bands is too rare to matter next to MinHash's own error."""
        n = sigs.shape[0]
        banded = sigs[:, : self.bands * self.rows].reshape(n, self.bands, self.rows).astype(np.uint64)
        out = np.zeros((n, self.bands), dtype=np.uint64)
        mult = _U64(0x100000001B3)
        with np.errstate(over="ignore"):
            for k in range(self.rows):
                out = (out ^ banded[:, :, k]) * mult
        return out


def _probability(s: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """Chance that two documents with Jaccard similarity `s` share at least one band."""
    return 1.0 - (1.0 - s**rows) ** bands


@lru_cache(maxsize=32)
def optimal_params(threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5) -> LSHParams:
    """The bands and rows that minimize the weighted area of false positives (below the threshold) and false
    negatives (above it) — the rule datasketch's MinHashLSH uses, so both tools index with the same settings."""
    best, best_err = LSHParams(1, num_perm), float("inf")
    lo, hi = np.linspace(0.0, threshold, 200), np.linspace(threshold, 1.0, 200)
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            fp = np.trapezoid(_probability(lo, bands, rows), lo)
            fn = np.trapezoid(1.0 - _probability(hi, bands, rows), hi)
            err = fp_weight * fp + fn_weight * fn
            if err < best_err:
                best, best_err = LSHParams(bands, rows), err
    return best


def verified_params(threshold: float, num_perm: int) -> LSHParams:
    """Bands and rows for LSH whose candidates are then verified against the full signature (as fmstack's dedup
    does): a false candidate costs one comparison, a missed pair is lost for good, so misses weigh 9× more.
    On the planted benchmark corpus at threshold 0.7 this raised pair recall from 0.82 to 0.94 at the same
    precision (0.998) and the same speed."""
    return optimal_params(threshold, num_perm, fp_weight=0.1, fn_weight=0.9)
