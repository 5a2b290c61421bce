"""Corpora with planted near duplicates and a known answer, built from text that ships in packages (gensim's
Wikipedia articles and Lee news corpus): how the dedup benchmark scores precision and recall, and how a user can
check a threshold before trusting it on their own data.

A copy is made the way duplicates arise on the web: 1–5 % of its words replaced, deleted or inserted, its case or
punctuation changed, boilerplate appended. Everything is drawn from one seeded generator: the same arguments give
the same corpus.
"""

from __future__ import annotations

import bz2
import json
import random
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

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


# --- a messy corpus: what a cleaning pipeline must cope with, with the answer written beside it ---------------------

PII_SENTENCES = [
    ("Contact the author at {name}@example.org for details.", "email"),
    ("Call the newsroom on +61 2 9555 0142 after 5pm.", "phone"),
    ("The server at 192.168.14.201 logged the request.", "ip"),
    ("Payment was made with card 4539 1488 0343 6467 yesterday.", "credit_card"),
]
HTML_PAGE = (
    "<!DOCTYPE html><html><head><title>News</title><style>body {{color: red}}</style>"
    "<script>var tracker = 'do-not-keep';</script></head><body><nav><a href='/'>Home</a></nav>"
    "<article><h1>Report</h1><p>{body}</p></article><footer>Cookie policy</footer></body></html>"
)
GARBAGE = [
    "$$$ ### !!! @@@ %%% ^^^ &&& *** ((( ))) ~~~ ||| +++ === <<< >>> ??? ;;; ::: ,,, ... " * 5,
    "buy now " * 80,
    "ok",
    "\n".join(["Click here to subscribe"] * 30),
    "0 1 2 3 4 5 6 7 8 9 " * 30,
]


def _foreign_passages(n: int) -> list[str]:
    """Bulgarian Wikipedia passages (gensim ships a short dump): text a language filter for English must drop."""
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki
    from gensim.test.utils import datapath

    out: list[str] = []
    with bz2.open(datapath("bgwiki-latest-pages-articles-shortened.xml.bz2")) as f:
        for _title, text, _pageid in extract_pages(f):
            out += _passages(filter_wiki(text), 60, 200)
            if len(out) >= n:
                break
    return out[:n]


def write_messy_corpus(folder: Path, originals: int = 300, seed: int = 0) -> dict:
    """JSONL files of real passages with planted near and exact duplicates, PII, HTML pages, garbage, Bulgarian
    text, broken JSON and a non-UTF-8 line; returns what was planted, by document id (and writes it to
    `truth.json` beside the folder, not in it, so that it is not read as data)."""
    rng = random.Random(seed)
    bases = list(base_documents())
    rng.shuffle(bases)
    rows: list[dict] = []
    truth: dict = {"originals": [], "duplicates": {}, "pii": {}, "html": [], "garbage": [], "foreign": []}
    vocabulary = sorted({w for b in bases[:100] for w in b.split()})
    for i, text in enumerate(bases[:originals]):
        rows.append({"id": f"doc-{i}", "text": text})
        truth["originals"].append(f"doc-{i}")
    for k in range(originals // 3):
        src = rng.randrange(originals)
        near = k % 4 != 0
        text = make_copy(bases[src], rng, vocabulary) if near else "  " + bases[src].replace(" ", "  ") + "\n"
        rows.append({"id": f"dup-{k}", "text": text})
        truth["duplicates"][f"dup-{k}"] = f"doc-{src}"
    for k in range(originals // 8):
        sentence, kind = PII_SENTENCES[k % len(PII_SENTENCES)]
        secret = sentence.format(name=f"reporter{k}")
        rows.append({"id": f"pii-{k}", "text": bases[originals + k] + " " + secret})
        truth["pii"][f"pii-{k}"] = {"kind": kind, "sentence": secret}
    for k in range(originals // 10):
        rows.append({"id": f"html-{k}", "text": HTML_PAGE.format(body=bases[originals + 100 + k])})
        truth["html"].append(f"html-{k}")
    for k, text in enumerate(GARBAGE * 4):
        rows.append({"id": f"garbage-{k}", "text": text})
        truth["garbage"].append(f"garbage-{k}")
    for k, text in enumerate(_foreign_passages(originals // 15)):
        rows.append({"id": f"bg-{k}", "text": text})
        truth["foreign"].append(f"bg-{k}")
    rng.shuffle(rows)
    folder.mkdir(parents=True, exist_ok=True)
    half = len(rows) // 2
    for name, part in (("a.jsonl", rows[:half]), ("b.jsonl", rows[half:])):
        (folder / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part), encoding="utf-8")
    with (folder / "b.jsonl").open("ab") as f:
        f.write(b'{"id": "broken-1", "text": "unterminated\n{"id": "latin1", "text": "caf\xe9"}\n')
    truth["broken_lines"] = [
        {"file": "b.jsonl", "line": len(rows) - half + 1},
        {"file": "b.jsonl", "line": len(rows) - half + 2},
    ]
    (folder.parent / f"{folder.name}-truth.json").write_text(json.dumps(truth, indent=1))
    return truth
