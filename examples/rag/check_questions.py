"""Check questions.yaml against the packaged articles: every answerable question's article exists and contains
one of its reference answers. Exits 1 naming what is wrong.

    python examples/rag/check_questions.py
"""

import sys
from pathlib import Path

import yaml

from fmstack.app.rag.corpus import wiki_articles

if __name__ == "__main__":
    articles = wiki_articles()
    problems = []
    questions = yaml.safe_load((Path(__file__).resolve().parent / "questions.yaml").read_text())["questions"]
    for q in questions:
        if not q.get("answerable", True):
            continue
        text = articles.get(q["title"])
        refs = q["reference"] if isinstance(q["reference"], list) else [q["reference"]]
        if text is None:
            problems.append(f"{q['id']}: no article '{q['title']}'")
        elif not any(r.lower() in text.lower() for r in refs):
            problems.append(f"{q['id']}: none of {refs} is in '{q['title']}'")
    print("\n".join(problems) or f"all {len(questions)} questions check out")
    sys.exit(1 if problems else 0)
