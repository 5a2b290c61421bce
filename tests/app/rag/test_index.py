"""The HNSW vector index: recall against exact search, deletes and re-adds, filters (graph walk and exact),
atomic save and load."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fmstack.app.rag import index as ix
from fmstack.app.rag.index import VectorIndex


def unit(n: int, dims: int = 32, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, dims)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def data():
    return unit(3000), unit(50, seed=1)


def exact(data: np.ndarray, q: np.ndarray, k: int, ids: np.ndarray | None = None) -> set:
    ids = np.arange(len(data)) if ids is None else ids
    return set(ids[np.argsort(-(data[ids] @ q))[:k]].tolist())


def test_recall_deletes_and_readds(data):
    vectors, queries = data
    index = VectorIndex(32, capacity=100)  # grows as needed
    index.add(np.arange(len(vectors), dtype=np.int64) + 1000, vectors)
    assert len(index) == 3000
    recall = np.mean([len(set((index.search(q, 10)[0] - 1000).tolist()) & exact(vectors, q, 10)) / 10 for q in queries])
    assert recall >= 0.95
    ids, sims = index.search(queries[0], 5)
    np.testing.assert_allclose(sims, vectors[ids - 1000] @ queries[0], atol=1e-5)

    gone = np.arange(1000, 1300, dtype=np.int64)
    index.remove(gone)
    assert len(index) == 2700
    assert not set(index.search(vectors[0], 20)[0].tolist()) & set(gone.tolist())
    index.add(gone[:1], vectors[:1] * -1)  # an id that comes back, with a new vector
    assert index.search(-vectors[0], 1)[0].tolist() == [1000]


def test_filters_exact_and_by_graph_walk(data, monkeypatch):
    vectors, queries = data
    index = VectorIndex(32)
    index.add(np.arange(len(vectors), dtype=np.int64), vectors)
    allowed = np.arange(0, 3000, 3, dtype=np.int64)
    for limit in (10_000, 10):  # 1,000 allowed: exact search; then the filtered HNSW walk
        monkeypatch.setattr(ix, "EXACT_LIMIT", limit)
        for q in queries[:10]:
            found, _ = index.search(q, 10, allowed)
            assert set(found.tolist()) <= set(allowed.tolist())
            assert len(set(found.tolist()) & exact(vectors, q, 10, allowed)) >= 8
    assert index.search(queries[0], 5, np.array([], dtype=np.int64))[0].size == 0


def test_save_is_atomic_and_load_round_trips(tmp_path, data):
    vectors, queries = data
    index = VectorIndex(32)
    index.add(np.arange(500, dtype=np.int64), vectors[:500])
    index.remove(np.array([7], dtype=np.int64))
    index.save(tmp_path, 3)
    index.add(np.arange(500, 600, dtype=np.int64), vectors[500:600])
    index.save(tmp_path, 4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index-4.hnsw", "index.json"]
    meta = json.loads((tmp_path / "index.json").read_text())
    assert meta["generation"] == 4 and meta["live"] == 599 and meta["deleted"] == [7]
    loaded = VectorIndex.load(tmp_path, 32)
    assert loaded.generation == 4 and len(loaded) == 599
    np.testing.assert_array_equal(loaded.search(queries[0], 10)[0], index.search(queries[0], 10)[0])
    assert VectorIndex.load(tmp_path, 64) is None  # another model's dimensions: rebuild
    (tmp_path / "index-4.hnsw").write_bytes(b"garbage")
    assert VectorIndex.load(tmp_path, 32) is None  # unreadable: rebuilt from the store
