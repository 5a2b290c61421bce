"""The example corpus: gensim's packaged English Wikipedia articles, one text file per article (examples/rag,
the tests and benchmarks/rag.py use it; no download)."""

from __future__ import annotations

import bz2
import re
from pathlib import Path

DUMP = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


def wiki_articles(min_chars: int = 2000) -> dict[str, str]:
    """{title: plain text} of every article in the dump with at least `min_chars` characters of text."""
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki
    from gensim.test.utils import datapath

    out: dict[str, str] = {}
    with bz2.open(datapath(DUMP)) as f:
        for title, text, _pageid in extract_pages(f):
            plain = re.sub(r"\n{3,}", "\n\n", filter_wiki(text)).strip()
            if len(plain) >= min_chars and not plain.lower().startswith("#redirect"):
                out[title] = plain
    return out


def write_wiki_corpus(folder: Path, titles: list[str] | None = None) -> list[Path]:
    """Write articles as `folder/{title}.txt` (all of them, or `titles`); returns the files."""
    folder.mkdir(parents=True, exist_ok=True)
    articles = wiki_articles()
    missing = [t for t in titles or [] if t not in articles]
    if missing:
        raise KeyError(f"not in the packaged dump: {missing}")
    paths = []
    for title in titles or list(articles):
        path = folder / f"{title.replace('/', '-')}.txt"
        path.write_text(articles[title] + "\n", encoding="utf-8")
        paths.append(path)
    return paths
