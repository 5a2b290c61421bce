"""The vector index: HNSW graphs (hnswlib) over unit-length embeddings, inner product = cosine similarity.

`Index` is what ingestion and retrieval use; `VectorIndex` (files, here) implements it everywhere, and
`fmstack.app.rag.pg_index.PgVectorIndex` implements it inside PostgreSQL when its server has pgvector, so that
replicas sharing the database share the index.

Chosen by measurement against usearch, faiss (HNSW and IVF), sqlite-vec and exact NumPy search: see
benchmarks/README.md ("RAG") and `benchmarks/rag.py --candidates`. hnswlib met the latency and recall goals with
the fewest moving parts, and it does what a collection that changes needs: add and delete by the chunk's id,
restrict a search with a filter, return stored vectors, save and load one file.

Files, beside the store under FMSTACK_HOME/rag/{collection uid}/:

    index-{generation}.hnsw   the graph and vectors, as of that generation of the collection
    index.json                which file is current: {"generation", "file", "live", "dims", ...}

A save writes the new graph to a temporary file, fsyncs it, renames it into place, then replaces index.json the
same way (the commit point) and deletes older graphs: a reader sees the old index or the new one, never half of
one. The embeddings are also in the store, so a missing or stale index is rebuilt from there.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path
from typing import Protocol

import numpy as np

M = 16  # graph degree
EF_CONSTRUCTION = 128
EF_SEARCH = 64  # candidates kept while searching; raised to k when k is larger
# A filter allowing at most this many chunks is searched exactly, over their vectors; more go by the filtered
# graph walk. hnswlib hands out stored vectors at ~50 µs each (get_items), so exact search costs 22 ms for 500
# chunks and 1 s for 20,000, while the filtered walk took 25 ms at 500 and 2-10 ms from 2,000 up (50k vectors of
# 384 dims, 2 cores, 2026-12-02): the crossover is near 600.
EXACT_LIMIT = 1_000


class Index(Protocol):
    """A collection's vector index: ids are int64 chunk ids, vectors unit length, `generation` the collection's
    generation the index reflects (ingestion bumps it; a search reopens an index whose generation is behind)."""

    generation: int

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Index these chunks, which the store has committed; an id already present takes its new vector."""

    def remove(self, ids: np.ndarray) -> None:
        """Forget these chunks, which the store has deleted."""

    def search(self, vector: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(chunk ids, cosine similarities), best first, only among `allowed` ids when given."""

    def save(self, directory: Path, generation: int) -> None:
        """Make this the index as of `generation` (`directory` is where an index kept in files keeps them)."""


class VectorIndex:
    """An HNSW index of (chunk id, vector); ids are int64 chunk ids."""

    def __init__(self, dims: int, capacity: int = 1024, generation: int = -1):
        import hnswlib

        self.dims = dims
        self.generation = generation
        self._index = hnswlib.Index(space="ip", dim=dims)
        self._index.init_index(max_elements=max(capacity, 16), ef_construction=EF_CONSTRUCTION, M=M)
        self._index.set_ef(EF_SEARCH)
        self._deleted: set[int] = set()
        self._lock = threading.Lock()  # writes are single-threaded (ingestion); this guards resize + add

    # ------------------------------------------------------------------ contents

    def __len__(self) -> int:
        return self._index.get_current_count() - len(self._deleted)

    def add(self, ids: np.ndarray, vectors: np.ndarray, threads: int = -1) -> None:
        if not len(ids):
            return
        with self._lock:
            self.__dict__.pop("_labels", None)
            revived = [int(i) for i in ids if int(i) in self._deleted]
            for i in revived:  # an id that comes back gets its new vector
                self._index.unmark_deleted(i)
                self._deleted.discard(i)
            needed = self._index.get_current_count() + len(ids)
            if needed > self._index.get_max_elements():
                self._index.resize_index(max(needed, int(self._index.get_max_elements() * 1.5)))
            self._index.add_items(np.ascontiguousarray(vectors, dtype=np.float32), ids, num_threads=threads)

    def remove(self, ids: np.ndarray) -> None:
        with self._lock:
            present = set(self._index.get_ids_list()) if len(ids) > 1000 else None
            for i in map(int, ids):
                if i in self._deleted or (present is not None and i not in present):
                    continue
                try:
                    self._index.mark_deleted(i)
                except RuntimeError:  # not in the index (never added, e.g. after an interrupted run)
                    continue
                self._deleted.add(i)

    # ------------------------------------------------------------------ search

    def search(
        self, vector: np.ndarray, k: int, allowed: np.ndarray | None = None, ef: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(chunk ids, cosine similarities), best first. `allowed` restricts the search to those ids: exactly when
        they are few, else by filtering the graph walk."""
        live = len(self)
        vector = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        if allowed is not None:
            allowed = np.asarray(allowed, dtype=np.int64)
            if len(allowed) <= EXACT_LIMIT:
                return self._exact(vector[0], k, allowed)
        k = min(k, live if allowed is None else min(live, len(allowed)))
        if k <= 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        self._index.set_ef(max(ef or EF_SEARCH, k))
        if allowed is not None:
            keep = set(allowed.tolist())
            try:
                labels, distances = self._index.knn_query(vector, k=k, filter=lambda label: label in keep)
            except RuntimeError:  # the filtered walk found fewer than k: search those chunks exactly
                return self._exact(vector[0], k, allowed)
        else:
            labels, distances = self._index.knn_query(vector, k=k)
        return labels[0].astype(np.int64), (1.0 - distances[0]).astype(np.float32)

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        if not len(ids):
            return np.empty((0, self.dims), np.float32)
        return np.asarray(self._index.get_items(np.asarray(ids, dtype=np.int64), return_type="numpy"), np.float32)

    def _exact(self, vector: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        present = np.array([i for i in allowed.tolist() if i not in self._deleted and self._has(i)], dtype=np.int64)
        if not len(present):
            return np.empty(0, np.int64), np.empty(0, np.float32)
        sims = self.vectors(present) @ vector
        top = np.argsort(-sims)[:k]
        return present[top], sims[top].astype(np.float32)

    def _has(self, label: int) -> bool:
        if not hasattr(self, "_labels"):
            self._labels = set(self._index.get_ids_list())
        return label in self._labels

    # ------------------------------------------------------------------ files

    def save(self, directory: Path, generation: int) -> None:
        """Atomically make this the collection's index at `generation`."""
        directory.mkdir(parents=True, exist_ok=True)
        name = f"index-{generation}.hnsw"
        tmp = directory / f".{name}.{os.getpid()}.tmp"
        with self._lock:
            self._index.save_index(str(tmp))
        _fsync(tmp)
        os.replace(tmp, directory / name)
        meta = {
            "generation": generation,
            "file": name,
            "live": len(self),
            "count": self._index.get_current_count(),
            "deleted": sorted(self._deleted),
            "dims": self.dims,
            "library": "hnswlib",
            "M": M,
            "ef_construction": EF_CONSTRUCTION,
        }
        tmp_meta = directory / f".index.json.{os.getpid()}.tmp"
        tmp_meta.write_text(json.dumps(meta))
        _fsync(tmp_meta)
        os.replace(tmp_meta, directory / "index.json")
        _fsync_dir(directory)
        self.generation = generation
        for old in directory.glob("index-*.hnsw"):
            if old.name != name:
                old.unlink(missing_ok=True)
        if hasattr(self, "_labels"):
            del self._labels

    @classmethod
    def load(cls, directory: Path, dims: int) -> VectorIndex | None:
        """The saved index, or None if there is none (or it cannot be read: it will be rebuilt)."""
        import hnswlib

        try:
            meta = json.loads((directory / "index.json").read_text())
            if meta.get("dims") != dims or meta.get("library") != "hnswlib":
                return None
            index = cls.__new__(cls)
            index.dims = dims
            index.generation = int(meta["generation"])
            index._index = hnswlib.Index(space="ip", dim=dims)
            index._index.load_index(str(directory / meta["file"]), max_elements=0)
            index._index.set_ef(EF_SEARCH)
            index._deleted = set(meta.get("deleted", []))
            index._lock = threading.Lock()
            return index
        except (OSError, ValueError, KeyError, RuntimeError):
            return None

    @staticmethod
    def saved_generation(directory: Path) -> int | None:
        try:
            return int(json.loads((directory / "index.json").read_text())["generation"])
        except (OSError, ValueError, KeyError):
            return None


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems do not fsync directories
        _fsync(path)
