"""Dataset engineering: read, clean, deduplicate, tokenize and report on text and image datasets.

A pipeline reads documents from files in shards, runs steps on them and writes Parquet or JSONL plus a manifest;
every dropped or changed document is counted under the rule that did it. See `pipeline.py` for how the steps run.
"""
