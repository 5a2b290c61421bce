"""Write the messy example corpus to examples/data/raw/: real Wikipedia and news passages from gensim's test data,
with planted near and exact duplicates, PII, HTML pages, garbage, Bulgarian text, a broken JSON line and a line
that is not UTF-8. `raw-truth.json` records what was planted, so a pipeline's output can be scored against it."""

from pathlib import Path

from fmstack.model.data.synthetic import write_messy_corpus

if __name__ == "__main__":
    folder = Path(__file__).parent / "raw"
    truth = write_messy_corpus(folder)
    print(f"wrote {folder}: " + ", ".join(f"{len(v)} {k}" for k, v in truth.items()))
