"""Check a question set against its corpus: every answerable question's document exists and contains one of its
reference answers. Exits 1 naming what is wrong.

    python examples/rag/check_questions.py            # questions.yaml against the packaged Wikipedia articles
    python examples/rag/check_questions.py --stdlib   # stdlib_questions.yaml against stdlib/ (make_stdlib_corpus.py)
"""

import sys
from pathlib import Path

import yaml

from fmstack.app.rag.corpus import wiki_articles

HERE = Path(__file__).resolve().parent


def stdlib_articles() -> dict[str, str]:
    from make_stdlib_corpus import MODULES, module_markdown

    return {name: module_markdown(name) for name in MODULES}


if __name__ == "__main__":
    stdlib = "--stdlib" in sys.argv[1:]
    articles = stdlib_articles() if stdlib else wiki_articles()
    problems = []
    questions = yaml.safe_load((HERE / ("stdlib_questions.yaml" if stdlib else "questions.yaml")).read_text())
    questions = questions["questions"]
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
