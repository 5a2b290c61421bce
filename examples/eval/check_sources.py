"""Check that the example suites quote their sources: every wiki_qa passage comes from gensim's packaged Wikipedia
dump, every news_summary article is a line of gensim's Lee corpus, and every reference answer is in its passage.

The suites carry their text inline (so running them needs no gensim); this script is how that text was checked,
and how to re-check it after editing a case. It needs gensim (`pip install gensim`), which ships the data as test
fixtures under gensim/test/test_data/.

    .venv/bin/python examples/eval/check_sources.py
"""

from __future__ import annotations

import bz2
import re
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
WIKI_DUMP = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
NEWS = "lee_background.cor"


def squash(text: str) -> str:
    """One space between words: YAML folding and the wiki markup filter disagree about whitespace, not words."""
    return re.sub(r"\s+", " ", text).strip()


def plain_wiki(markup: str) -> str:
    """An article as readable text: gensim's markup filter, then the bold/italic quotes and the empty
    pronunciation parentheses ("Lincoln (; February…") that the removed templates leave behind."""
    from gensim.corpora.wikicorpus import filter_wiki

    text = filter_wiki(markup).replace("'''", "").replace("''", "")
    text = re.sub(r"\(\s*[;,]\s*[;,]?\s*", "(", text)
    text = re.sub(r"\(\s*\)", "", text)
    return squash(text).replace(" ,", ",").replace(" .", ".")


def wiki_articles() -> dict[str, str]:
    from gensim.corpora.wikicorpus import extract_pages
    from gensim.test.utils import datapath

    with bz2.BZ2File(datapath(WIKI_DUMP)) as f:
        return {title: plain_wiki(text) for title, text, _ in extract_pages(f)}


def check_wiki(suite: Path) -> list[str]:
    articles = wiki_articles()
    problems = []
    for case in yaml.safe_load(suite.read_text())["cases"]:
        title = case["metadata"]["article"]
        passage = squash(case["context"][0])
        references = case["reference"] if isinstance(case["reference"], list) else [case["reference"]]
        if title not in articles:
            problems.append(f"{case['id']}: no article '{title}' in {WIKI_DUMP}")
        elif passage not in articles[title]:
            problems.append(f"{case['id']}: passage is not a verbatim excerpt of '{title}'")
        if squash(case["vars"]["passage"]) != passage:
            problems.append(f"{case['id']}: the prompt's passage differs from the context")
        if not any(r.casefold() in passage.casefold() for r in references):
            problems.append(f"{case['id']}: no reference answer {references} appears in the passage")
        if len(passage.split()) > 150:
            problems.append(f"{case['id']}: passage has {len(passage.split())} words (keep it to 150)")
    return problems


def check_news(suite: Path) -> list[str]:
    from gensim.test.utils import datapath

    lines = Path(datapath(NEWS)).read_text(encoding="utf-8").splitlines()
    problems = []
    for case in yaml.safe_load(suite.read_text())["cases"]:
        line = case["metadata"]["line"]
        if squash(case["vars"]["article"]) != squash(lines[line - 1]):
            problems.append(f"{case['id']}: article differs from {NEWS} line {line}")
    return problems


def main() -> int:
    problems = check_wiki(HERE / "wiki_qa.yaml") + check_news(HERE / "news_summary.yaml")
    for problem in problems:
        print(problem, file=sys.stderr)
    print("sources: ok" if not problems else f"sources: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
