"""Dataset engineering: read, clean, deduplicate, tokenize and report on text and image datasets.

A pipeline reads documents from files in shards, runs steps on them and writes Parquet or JSONL plus a manifest;
every dropped or changed document is counted under the rule that did it. See `pipeline.py` for how the steps run.

`spec` (the pipeline YAML) → `pipeline` (stages, resumable), its per-shard work in `stages`, run by `executors`
(this process, a process pool or Ray): `readers`, `clean` (repairs, quality filters, language, PII), `dedup`
(exact and near duplicates, with `shingles` and `minhash`), `tokenize` (BPE training, any tokenizer, statistics,
packing) and `report` (HTML); `documents` holds the records they pass along. Beside the pipeline: `images`
(image deduplication), `from_traces` (chat datasets from stored traces and feedback) and `synthetic` (corpora
with planted near duplicates, to measure deduplication against).

Layer: imports `fmstack.engines` (chat message types) and `fmstack.core` only.
"""
