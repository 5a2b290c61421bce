"""Write the example collection's documents: the 100 English Wikipedia articles packaged with gensim's test data,
one `wiki/{title}.txt` per article (3.1 M characters). No download.

    python examples/rag/make_corpus.py
"""

from pathlib import Path

from fmstack.app.rag.corpus import write_wiki_corpus

if __name__ == "__main__":
    folder = Path(__file__).resolve().parent / "wiki"
    paths = write_wiki_corpus(folder)
    print(f"wrote {len(paths)} articles to {folder}")
