"""MinHash: estimates as accurate as datasketch's, the same LSH settings, and stable across processes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from fmstack.model.data.dedup import find_duplicates, similarities
from fmstack.model.data.minhash import optimal_params, signatures, verified_params
from fmstack.model.data.shingles import dedup_words, fingerprints, shingle_hashes
from fmstack.model.data.synthetic import planted_corpus


@pytest.fixture(scope="module")
def corpus():
    return planted_corpus(600, seed=3)


def _jaccard(a: str, b: str, ngram: int = 3) -> float:
    x, y = set(shingle_hashes(a, ngram).tolist()), set(shingle_hashes(b, ngram).tolist())
    return len(x & y) / len(x | y)


def _pairs(corpus, limit: int = 300):
    """Copies with their original (similar) and neighbours in the shuffled order (mostly unrelated)."""
    first: dict[int, int] = {}
    similar = []
    for i, g in enumerate(corpus.groups):
        if g in first:
            similar.append((first[g], i))
        else:
            first[g] = i
    return similar[:limit] + [(i, i + 1) for i in range(limit)]


def test_estimates_match_exact_jaccard_as_well_as_datasketch(corpus):
    """Our 32-bit affine permutations must estimate Jaccard as well as datasketch's 64-bit prime-field ones:
    both errors near 1/sqrt(128) ≈ 0.09 at worst and unbiased."""
    from datasketch import MinHash

    sigs = signatures([shingle_hashes(t, 3) for t in corpus.texts], 128)
    ours, theirs = [], []
    for i, j in _pairs(corpus):
        true = _jaccard(corpus.texts[i], corpus.texts[j])
        ours.append(similarities(sigs, np.array([i]), np.array([j]))[0] - true)
        ms = []
        for t in (corpus.texts[i], corpus.texts[j]):
            w = dedup_words(t)
            m = MinHash(num_perm=128)
            m.update_batch([" ".join(w[k : k + 3]).encode() for k in range(max(1, len(w) - 2))])
            ms.append(m)
        theirs.append(ms[0].jaccard(ms[1]) - true)
    assert abs(np.mean(ours)) < 0.01
    assert np.mean(np.abs(ours)) < 1.25 * np.mean(np.abs(theirs)) + 0.005
    assert np.max(np.abs(ours)) < 0.15


def test_lsh_parameters_are_datasketchs():
    from datasketch import MinHashLSH

    for threshold in (0.5, 0.7, 0.8, 0.9):
        lsh = MinHashLSH(threshold=threshold, num_perm=128)
        p = optimal_params(threshold, 128)
        assert (p.bands, p.rows) == (lsh.b, lsh.r)


def test_signatures_do_not_depend_on_batching_or_process():
    """Shards are signed in different processes and batches; their signatures must compare."""
    texts = ["the quick brown fox jumps over the lazy dog", "", "short", "a b c d e f g h i j k l m n o p"] * 50
    one = signatures([shingle_hashes(t, 5) for t in texts], 64)
    split = np.concatenate(
        [signatures([shingle_hashes(t, 5) for t in texts[k : k + 7]], 64) for k in range(0, len(texts), 7)]
    )
    assert (one == split).all()
    code = (
        "from fmstack.model.data.minhash import signatures; from fmstack.model.data.shingles import shingle_hashes;"
        "print(signatures([shingle_hashes('the quick brown fox jumps over the lazy dog', 5)], 64)[0].tolist())"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert eval(other) == one[0].tolist()


def test_signatures_equal_the_definition_document_by_document():
    """Each entry is min over the document's shingles of (a·x + b) mod 2^32, computed here one document and one
    hash function at a time in Python integers; empty documents get the all-ones signature."""
    from fmstack.model.data.minhash import permutations

    rng = np.random.default_rng(5)
    docs = [rng.integers(0, 2**32, size=n, dtype=np.uint64).astype(np.uint32) for n in (5, 0, 1, 300, 0, 17)]
    a, b = permutations(16)
    functions = list(zip(a.tolist(), b.tolist(), strict=True))
    expected = [[min((ai * x + bi) % 2**32 for x in doc.tolist()) if len(doc) else 2**32 - 1 for ai, bi in functions]
                for doc in docs]  # fmt: skip
    assert signatures(docs, 16).tolist() == expected


def test_normalization_ignores_case_and_punctuation_only():
    a = shingle_hashes("Hello, World! This is fmstack.", 2)
    assert (a == shingle_hashes("hello world this is FMSTACK", 2)).all()
    assert not (a == shingle_hashes("hello world this was fmstack", 2)).all()
    assert len(shingle_hashes("two words", 5)) == 1  # shorter than a shingle: still one fingerprint
    empty = signatures([shingle_hashes("", 5)], 16)
    assert (empty == np.iinfo(np.uint32).max).all()


M64 = 2**64 - 1


def _mix(x: int) -> int:
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def _reference_shingles(text: str, ngram: int) -> list[int]:
    """The vectorized shingles, recomputed word by word from `dedup_words` in plain Python integers."""
    words = [
        _mix(sum(c * pow(0x100000001B3, i, 2**64) for i, c in enumerate(w.encode())) & M64) for w in dedup_words(text)
    ]
    windows = [words[i : i + ngram] for i in range(len(words) - ngram + 1)] or ([words] if words else [])
    out = []
    for window in windows:
        h = 0
        for w in window:
            h = ((h ^ w) * 0x9E3779B97F4A7C15) & M64
        out.append(h >> 32)
    return out


TRICKY = [
    "Plain ASCII words, with punctuation; and NUMBERS 1984 and snake_case.",
    "Café — “quoted” text… with an em dash, «guillemets» and 25°C; ﬁ ligature; ＦＵＬＬ width.",
    "Ελληνικά και русский текст, 中文字符 and emoji 🙂 mixed in.",
    "a\x00b null byte, tabs\tand\nnewlines",
    "one",
    "",
]


def test_vectorized_shingles_equal_the_word_by_word_reference():
    batch = fingerprints(TRICKY, 3)
    for i, text in enumerate(TRICKY):
        assert batch[i].tolist() == _reference_shingles(text, 3), text
        assert shingle_hashes(text, 3).tolist() == batch[i].tolist()  # alone or in a batch: the same
    assert len(batch[5]) == 0 and len(batch[4]) == 1
    assert dedup_words(TRICKY[1])[:4] == ["café", "quoted", "text", "with"]  # curly quotes and … separate words


def test_documents_with_nothing_in_common_form_no_clusters():
    """No LSH band is shared, so there are no candidate pairs at all: nothing is removed (and nothing breaks)."""
    texts = [" ".join(f"w{i}x{j}" for j in range(40)) for i in range(50)]
    fp = fingerprints(texts, 3)
    result = find_duplicates(fp.exact, signatures(fp, 128), verified_params(0.7, 128), 0.7)
    assert not result.removed.any() and result.clusters == []
