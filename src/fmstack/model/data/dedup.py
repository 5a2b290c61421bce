"""Exact and near-duplicate detection over a whole dataset: union-find clusters, one kept per cluster.

Inputs are per-document fingerprints computed shard by shard (in parallel, see `pipeline.py`): a 64-bit hash of
the normalized text, and a MinHash signature. This module is the one global step: it groups documents whose
normalized text is equal (exact) or whose signatures share an LSH band and agree on at least `threshold` of their
positions (near), then keeps the first document of each cluster in input order — a rule that gives the same
answer on every run and every engine.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import xxhash

from fmstack.model.data.minhash import LSHParams, dedup_words, normalize_for_dedup, shingle_hashes_of_words


def exact_hash(text: str) -> int:
    """The fingerprint two documents share when they are equal after normalization."""
    return xxhash.xxh64_intdigest(normalize_for_dedup(text).encode())


def fingerprint(text: str, ngram: int) -> tuple[int, np.ndarray]:
    """The exact hash and the shingle hashes of a document, from one pass of normalization."""
    words = dedup_words(text)
    return xxhash.xxh64_intdigest(" ".join(words).encode()), shingle_hashes_of_words(words, ngram)


class UnionFind:
    """Disjoint sets over 0..n-1. The smaller index becomes the root, so a cluster's root is its first document."""

    def __init__(self, n: int) -> None:
        self.parent = np.arange(n, dtype=np.int64)

    def find(self, x: int) -> int:
        parent = self.parent
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return int(root)

    def union(self, a: int, b: int) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        if rb < ra:
            ra, rb = rb, ra
        self.parent[rb] = ra
        return True


@dataclass
class Member:
    index: int
    kind: str  # "exact" or "near"
    similarity: float


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


def _bucket_pairs(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For equal keys, pairs (first index with that key, each later index with it), in a stable order."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts = np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]
    group_first = order[np.maximum.accumulate(np.where(starts, np.arange(len(order)), 0))]
    later = ~starts
    return group_first[later], order[later]


class Signatures(Protocol):
    """Row access to signatures: an array, or `ShardedSignatures` memory-mapped from disk."""

    def __getitem__(self, i: int) -> np.ndarray: ...


class ShardedSignatures:
    """The signatures of every shard, memory-mapped: clustering reads only the rows it verifies, so the memory a
    run needs does not grow with the corpus's signatures (16 bytes per document stay in RAM, not 512)."""

    def __init__(self, files: list[Path]) -> None:
        self.parts = [np.load(f, mmap_mode="r") for f in files]
        self.starts = np.cumsum([0] + [len(p) for p in self.parts])

    def __getitem__(self, i: int) -> np.ndarray:
        k = int(np.searchsorted(self.starts, i, side="right")) - 1
        return self.parts[k][i - self.starts[k]]


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
    """Exact matches first, then LSH candidates band by band (one column of band hashes in memory at a time).

    Candidates are verified against the full signature (`threshold`), which removes the band collisions that
    plain LSH counts as duplicates; each candidate is compared with the first document of its bucket and with its
    neighbour in the bucket, so a chain of near copies still joins one cluster."""
    n = len(exact)
    uf = UnionFind(n)
    kinds: dict[int, tuple[str, float]] = {}
    for a, b in zip(*_bucket_pairs(exact), strict=True):
        if uf.union(int(a), int(b)):
            kinds[int(b)] = ("exact", 1.0)
    for column in band_columns:
        _join_band(uf, kinds, column, sigs, threshold)  # type: ignore[arg-type]
    return _collect(uf, kinds, n)


def _join_band(
    uf: UnionFind, kinds: dict[int, tuple[str, float]], keys: np.ndarray, sigs: Signatures, threshold: float
) -> None:
    """Union the verified candidates of one band.

    Within a bucket, each document is compared with one representative of every cluster already in the bucket
    (not only with the bucket's first document): two copies of an original can be less similar to each other than
    each is to the original, and comparing with the first copy alone missed 4 % of planted pairs."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1], True])
    for lo, hi in zip(starts[:-1], starts[1:], strict=True):
        if hi - lo > 1:
            _join_bucket(uf, kinds, order[lo:hi].tolist(), sigs, threshold)


def _join_bucket(
    uf: UnionFind, kinds: dict[int, tuple[str, float]], members: list[int], sigs: Signatures, threshold: float
) -> None:
    reps: list[int] = [members[0]]
    for b in members[1:]:
        joined = False
        sb = sigs[b]
        for a in reps:
            if uf.find(a) == uf.find(b):
                joined = True
                continue
            sa = sigs[a]
            sim = float(np.count_nonzero(sa == sb)) / len(sa)
            if sim >= threshold:
                uf.union(a, b)
                kinds.setdefault(max(a, b), ("near", sim))
                joined = True
        if not joined:
            reps.append(b)


def _collect(uf: UnionFind, kinds: dict[int, tuple[str, float]], n: int) -> DedupResult:
    roots = np.fromiter((uf.find(i) for i in range(n)), dtype=np.int64, count=n)
    removed = roots != np.arange(n)
    clusters: dict[int, Cluster] = {}
    exact_removed = near_removed = 0
    for i in np.flatnonzero(removed):
        kind, sim = kinds.get(int(i), ("near", 0.0))
        clusters.setdefault(int(roots[i]), Cluster(int(roots[i]))).members.append(Member(int(i), kind, sim))
        if kind == "exact":
            exact_removed += 1
        else:
            near_removed += 1
    return DedupResult(removed, [clusters[k] for k in sorted(clusters)], exact_removed, near_removed)
