"""Write the pretraining corpus to examples/train/pretrain/raw/: gensim's packaged English Wikipedia articles
(100 articles, 3.1 M characters) and the Lee news corpus (300 Australian news stories), one JSON line per document.
No download: both ship inside gensim's test data."""

import json
from pathlib import Path

from gensim.test.utils import datapath

from fmstack.app.rag.corpus import wiki_articles

if __name__ == "__main__":
    raw = Path(__file__).parent / "raw"
    raw.mkdir(exist_ok=True)
    articles = wiki_articles()
    with (raw / "wiki.jsonl").open("w", encoding="utf-8") as f:
        f.writelines(json.dumps({"id": title, "text": text}) + "\n" for title, text in articles.items())
    news = [line.strip() for line in Path(datapath("lee_background.cor")).read_text().splitlines() if line.strip()]
    with (raw / "lee.jsonl").open("w", encoding="utf-8") as f:
        f.writelines(json.dumps({"id": f"lee-{i}", "text": text}) + "\n" for i, text in enumerate(news))
    chars = sum(map(len, articles.values())) + sum(map(len, news))
    print(f"wrote {raw}: {len(articles)} Wikipedia articles and {len(news)} news stories, {chars:,} characters")
