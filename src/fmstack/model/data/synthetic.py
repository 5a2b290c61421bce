"""Corpora with planted near duplicates and a known answer, built from text that ships in packages (gensim's
Wikipedia articles and Lee news corpus): how the dedup benchmark scores precision and recall, and how a user can
check a threshold before trusting it on their own data.

A copy is made the way duplicates arise on the web: 1–5 % of its words replaced, deleted or inserted, its case or
punctuation changed, boilerplate appended. Everything is drawn from one seeded generator: the same arguments give
the same corpus.
"""

from __future__ import annotations

import bz2
import random
import re
from dataclasses import dataclass
from functools import lru_cache

BOILERPLATE = [
    "Subscribe to our newsletter for the latest news.",
    "Copyright 2024 Example News Ltd. All rights reserved.",
    "Share this article on Facebook and Twitter.",
    "Click here to read more stories like this.",
    "This article was originally published on our website.",
]
_PUNCT = re.compile(r"[.,;:!?'\"()]")


@dataclass
class PlantedCorpus:
    """`texts[i]` is a copy of base document `groups[i]`; documents with the same group are duplicates."""

    texts: list[str]
    groups: list[int]


@lru_cache(maxsize=1)
def base_documents(min_words: int = 60, max_words: int = 300) -> tuple[str, ...]:
    """Distinct documents: Wikipedia articles cut into passages of about `max_words` words at paragraph breaks,
    and the Lee news articles. Passages shorter than `min_words` are left out (too short to edit by 1 %)."""
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki
    from gensim.test.utils import datapath

    passages: list[str] = []
    dump = datapath("enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
    with bz2.open(dump) as f:
        for _title, text, _pageid in extract_pages(f):
            passages += _passages(filter_wiki(text), min_words, max_words)
    with open(datapath("lee_background.cor"), encoding="utf-8") as f:
        passages += [line.strip() for line in f if len(line.split()) >= min_words]
    seen: set[str] = set()
    out = []
    for p in passages:
        key = " ".join(p.lower().split())
        if key not in seen:
            seen.add(key)
            out.append(p)
    return tuple(out)


def _passages(text: str, min_words: int, max_words: int) -> list[str]:
    out, current = [], []
    for para in re.split(r"\n\s*\n", text):
        words = para.split()
        if not words or para.lstrip().startswith(("{", "|", "=", "*", "[[")):
            continue
        current += words
        if len(current) >= max_words:
            out.append(" ".join(current[:max_words]))
            current = []
    if len(current) >= min_words:
        out.append(" ".join(current))
    return [p for p in out if len(p.split()) >= min_words]


def make_copy(text: str, rng: random.Random, vocabulary: list[str]) -> str:
    """A near duplicate of `text`: 1–5 % of words edited, then maybe case, punctuation and boilerplate."""
    words = text.split()
    for _ in range(max(1, round(len(words) * rng.uniform(0.01, 0.05)))):
        i = rng.randrange(len(words))
        op = rng.random()
        if op < 0.5:
            words[i] = rng.choice(vocabulary)
        elif op < 0.75 and len(words) > 1:
            del words[i]
        else:
            words.insert(i, rng.choice(vocabulary))
    out = " ".join(words)
    if rng.random() < 0.3:
        out = rng.choice([str.lower, str.upper, str.title])(out)
    if rng.random() < 0.3:
        out = _PUNCT.sub("", out) if rng.random() < 0.5 else out.replace(" ", ", ", 3)
    if rng.random() < 0.5:
        out += "\n" + rng.choice(BOILERPLATE)
    return out


def planted_corpus(n_docs: int = 20_000, duplicate_fraction: float = 0.5, seed: int = 0) -> PlantedCorpus:
    """`n_docs` documents in shuffled order: about `1 - duplicate_fraction` of them distinct originals, the rest
    copies of those originals. When the packaged text runs out of distinct passages, the originals are reused
    more often — the corpus still has exactly the ground truth it reports."""
    bases = base_documents()
    rng = random.Random(seed)
    n_orig = min(len(bases), max(1, round(n_docs * (1 - duplicate_fraction))))
    chosen = rng.sample(range(len(bases)), n_orig)
    vocabulary = sorted({w for i in chosen[:200] for w in bases[i].split()})
    texts = [bases[i] for i in chosen]
    groups = list(range(n_orig))
    while len(texts) < n_docs:
        g = rng.randrange(n_orig)
        texts.append(make_copy(bases[chosen[g]], rng, vocabulary))
        groups.append(g)
    order = list(range(n_docs))
    rng.shuffle(order)
    return PlantedCorpus([texts[i] for i in order], [groups[i] for i in order])


def pair_scores(predicted: list[int], truth: list[int]) -> dict[str, float]:
    """Precision, recall and F1 of duplicate *pairs*: two documents are a predicted pair when they share a
    predicted cluster, a true pair when they share a group. Counted from cluster sizes, not by listing pairs."""
    from collections import Counter

    def pairs(counts: Counter) -> int:
        return sum(n * (n - 1) // 2 for n in counts.values())

    tp = pairs(Counter(zip(predicted, truth, strict=True)))
    pp, tp_all = pairs(Counter(predicted)), pairs(Counter(truth))
    precision = tp / pp if pp else 1.0
    recall = tp / tp_all if tp_all else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "true_pairs": tp_all, "predicted_pairs": pp}
