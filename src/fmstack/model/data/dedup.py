"""Exact and near-duplicate detection over a whole dataset: connected components, one document kept per cluster.

Inputs are per-document fingerprints computed shard by shard (in parallel, see `pipeline.py`): a 64-bit hash of
the normalized word sequence, and a MinHash signature. This module is the one global step. Documents with equal
exact hashes are joined; documents that share an LSH band become candidates, and a candidate pair is joined when
the signatures agree on at least `threshold` of their positions (verification removes the band collisions that
plain LSH counts as duplicates). Clusters are the connected components, and each keeps its first document in
input order — a rule that gives the same answer on every run and every engine.

Everything is array work: candidate pairs of all bands are generated, de-duplicated and verified in NumPy, and the
components are found by label propagation with pointer jumping, not by a Python union-find over pairs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from fmstack.model.data.minhash import LSHParams

BUCKET_WINDOW = 16  # each document in an LSH bucket is checked against up to this many earlier ones
PAIRS_PER_CHUNK = 65_536  # signature rows gathered at once to verify pairs (2 × 32 MB at 128 permutations)


@dataclass
class Member:
    index: int
    kind: str  # "exact" or "near"
    similarity: float  # estimated Jaccard similarity to the kept document


@dataclass
class Cluster:
    kept: int
    members: list[Member] = field(default_factory=list)


@dataclass
class DedupResult:
    """Which documents go (a boolean mask in input order) and the clusters, for a person to inspect."""

    removed: np.ndarray
    clusters: list[Cluster]
    exact_removed: int
    near_removed: int


class Signatures(Protocol):
    """Rows of signatures by index array: an array, or `ShardedSignatures` memory-mapped from disk."""

    def __getitem__(self, rows: np.ndarray) -> np.ndarray: ...


class ShardedSignatures:
    """The signatures of every shard, memory-mapped: clustering reads only the rows it verifies, so the memory a
    run needs does not grow with the corpus's signatures (tens of bytes per document stay in RAM, not 512)."""

    def __init__(self, files: list[Path]) -> None:
        self.parts = [np.load(f, mmap_mode="r") for f in files]
        self.starts = np.cumsum([0] + [len(p) for p in self.parts])

    def __getitem__(self, rows: np.ndarray) -> np.ndarray:
        width = self.parts[0].shape[1] if self.parts else 0
        out = np.empty((len(rows), width), dtype=np.uint32)
        part = np.searchsorted(self.starts, rows, side="right") - 1
        for k in np.unique(part):
            sel = part == k
            out[sel] = self.parts[k][rows[sel] - self.starts[k]]
        return out


def find_duplicates(
    exact: np.ndarray, sigs: np.ndarray | None, params: LSHParams | None, threshold: float
) -> DedupResult:
    """Cluster documents given their exact hashes (n,) and, for near duplicates, their signatures (n × perm) in
    memory. The pipeline calls `cluster` with band hashes and signatures read from disk instead."""
    if sigs is None or params is None or not len(exact):
        return cluster(exact, [], None, threshold)
    bands = params.band_hashes(sigs)
    return cluster(exact, (bands[:, j] for j in range(params.bands)), sigs, threshold)


def cluster(
    exact: np.ndarray, band_columns: Iterable[np.ndarray], sigs: Signatures | None, threshold: float
) -> DedupResult:
    """Exact pairs, plus the verified LSH candidates of every band (one column of band hashes at a time)."""
    n = len(exact)
    a, b = _bucket_pairs(exact, window=1)  # equal hashes: each joined to the previous one is enough
    if sigs is not None:
        na, nb = _verified(_candidates(band_columns, n), sigs, threshold)
        a, b = np.concatenate((a, na)), np.concatenate((b, nb))
    roots = components(n, a, b)
    return _collect(roots, exact, sigs)


def _bucket_pairs(keys: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (earlier, later) of documents with equal keys, each later one with up to `window` earlier ones."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    pos = np.arange(len(order))
    group_start = np.maximum.accumulate(np.where(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]], pos, 0))
    rank = pos - group_start
    firsts, seconds = [], []
    for d in range(1, window + 1):
        sel = np.flatnonzero(rank >= d)
        if not len(sel):
            break
        firsts.append(order[sel - d])
        seconds.append(order[sel])
    if not firsts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    x, y = np.concatenate(firsts), np.concatenate(seconds)
    return np.minimum(x, y), np.maximum(x, y)


def _candidates(band_columns: Iterable[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs (a < b) of all bands, each once, sorted."""
    keys = [a * n + b for a, b in (_bucket_pairs(col, BUCKET_WINDOW) for col in band_columns)]
    if not keys:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    # sort and drop repeats: np.unique (hash-based since NumPy 2.3) took 10x longer on these millions of keys
    keys = np.sort(np.concatenate(keys))
    first = np.ones(len(keys), dtype=bool)
    first[1:] = keys[1:] != keys[:-1]
    return np.divmod(keys[first], n)


def similarities(sigs: Signatures, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The fraction of agreeing signature positions of each pair, in chunks that bound memory."""
    out = np.empty(len(a), dtype=np.float64)
    for lo in range(0, len(a), PAIRS_PER_CHUNK):
        x, y = sigs[a[lo : lo + PAIRS_PER_CHUNK]], sigs[b[lo : lo + PAIRS_PER_CHUNK]]
        out[lo : lo + PAIRS_PER_CHUNK] = np.count_nonzero(x == y, axis=1) / max(x.shape[1], 1)
    return out


def _verified(
    pairs: tuple[np.ndarray, np.ndarray], sigs: Signatures, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    a, b = pairs
    ok = similarities(sigs, a, b) >= threshold
    return a[ok], b[ok]


def components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest index in each document's connected component (the graph of pairs a–b): labels flow to the
    minimum along edges, and pointer jumping (label of the label) shortcuts long chains."""
    labels = np.arange(n, dtype=np.int64)
    if not len(a):
        return labels
    while True:
        low = np.minimum(labels[a], labels[b])
        new = labels.copy()
        np.minimum.at(new, a, low)
        np.minimum.at(new, b, low)
        new = new[new]
        if np.array_equal(new, labels):
            return labels
        labels = new


def _collect(roots: np.ndarray, exact: np.ndarray, sigs: Signatures | None) -> DedupResult:
    """Clusters from the component roots; each removed document's kind and similarity to the kept one."""
    n = len(roots)
    removed = roots != np.arange(n)
    idx = np.flatnonzero(removed)
    keep = roots[idx]
    is_exact = exact[idx] == exact[keep]
    sims = similarities(sigs, idx, keep) if sigs is not None and len(idx) else np.ones(len(idx))
    sims[is_exact] = 1.0
    clusters: dict[int, Cluster] = {}
    for i, r, e, s in zip(idx.tolist(), keep.tolist(), is_exact.tolist(), sims.tolist(), strict=True):
        clusters.setdefault(r, Cluster(r)).members.append(Member(i, "exact" if e else "near", s))
    n_exact = int(is_exact.sum())
    return DedupResult(removed, [clusters[k] for k in sorted(clusters)], n_exact, len(idx) - n_exact)
