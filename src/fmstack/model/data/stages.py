"""The per-shard work of a pipeline, as plain functions of a JSON-able job, so any engine can run them: this
process, a process pool, or Ray tasks on other machines.

Every stage writes its outputs to temporary names and renames them into place, and writes its marker (a small JSON
file) last: a shard with a marker is finished, a shard without one is redone from the start. That is what makes a
killed run resumable with no document lost or doubled.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from contextlib import nullcontext
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fmstack.model.data.documents import Document, Rejected, StepStats
from fmstack.model.data.readers import Fields, Shard, read_shard

BATCH = 1000
DOC_SCHEMA = pa.schema(
    [("id", pa.string()), ("text", pa.string()), ("source", pa.string()), ("line", pa.int64()), ("meta", pa.string())]
)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode())


@lru_cache(maxsize=4)
def _cleaner_for(config_json: str) -> Any:
    from fmstack.model.data.clean import CleanConfig, Cleaner

    return Cleaner(CleanConfig.from_dict(json.loads(config_json)))


def _words(text: str) -> int:
    return len(text.split())


class _DocWriter:
    """Documents to one Parquet file in batches: memory stays bounded whatever the shard's size."""

    def __init__(self, path: Path) -> None:
        self.path, self.tmp = path, path.with_name(f".{path.name}.tmp")
        self.writer = pq.ParquetWriter(self.tmp, DOC_SCHEMA, compression="zstd")
        self.rows: list[Document] = []
        self.count = 0

    def add(self, doc: Document) -> None:
        self.rows.append(doc)
        if len(self.rows) >= BATCH:
            self._flush()

    def _flush(self) -> None:
        if self.rows:
            cols = {
                "id": [d.id for d in self.rows],
                "text": [d.text for d in self.rows],
                "source": [d.source for d in self.rows],
                "line": [d.line for d in self.rows],
                "meta": [json.dumps(d.meta, sort_keys=True, ensure_ascii=False, default=str) for d in self.rows],
            }
            self.writer.write_table(pa.table(cols, schema=DOC_SCHEMA))
            self.count += len(self.rows)
            self.rows = []

    def close(self) -> None:
        self._flush()
        self.writer.close()
        os.replace(self.tmp, self.path)


def read_docs(path: Path, columns: list[str] | None = None) -> Any:
    """The record batches of a stage's document file."""
    return pq.ParquetFile(path).iter_batches(batch_size=BATCH, columns=columns)


def clean_shard(job: dict[str, Any]) -> dict[str, Any]:
    """Read one shard, clean it, and fingerprint what is kept for deduplication (stage A)."""
    shard, work = Shard(**job["shard"]), Path(job["work"])
    marker = work / "a" / f"{shard.name}.json"
    if marker.exists():
        return json.loads(marker.read_text())
    cleaner = _cleaner_for(job["clean"]) if job["clean"] else None
    stats, rejected, langs = StepStats(), [], Counter()
    words_in: list[int] = []
    writer = _DocWriter(work / "a" / f"{shard.name}.parquet")
    fp = _Fingerprints(job["dedup"])
    fields = Fields(job["text_field"], job["id_field"])
    for item in read_shard(shard, fields, Path(job["root"]) if job["root"] else None):
        if isinstance(item, Rejected):
            rejected.append(str(item))
            if job["strict"]:
                return {"shard": shard.index, "strict_error": str(item)}
            continue
        words_in.append(_words(item.text))
        doc = cleaner(item) if cleaner else item
        if doc is None:
            continue
        if "language" in doc.meta:
            langs[doc.meta["language"]] += 1
        writer.add(doc)
        fp.add(doc.text)
    writer.close()
    if cleaner:
        stats, cleaner.stats = cleaner.stats, StepStats()
    else:
        stats = StepStats(len(words_in), writer.count)
    fp.save(work / "a", shard.name, words_in)
    result = {
        "shard": shard.index,
        "kept": writer.count,
        "clean": stats.to_dict(),
        "rejected": rejected,
        "languages": dict(sorted(langs.items())),
    }
    write_json(marker, result)
    return result


class _Fingerprints:
    """Exact hashes and MinHash signatures of the kept documents, computed a batch at a time (the vectorized
    path: `shingles.fingerprints` and `minhash.signatures` work on whole batches)."""

    def __init__(self, dedup: dict[str, Any] | None) -> None:
        self.dedup = dedup
        self.exact: list[np.ndarray] = []
        self.words_out: list[int] = []
        self.pending: list[str] = []
        self.sigs: list[np.ndarray] = []

    def add(self, text: str) -> None:
        self.words_out.append(_words(text))
        if self.dedup is not None:
            self.pending.append(text)
            if len(self.pending) >= BATCH:
                self._sign()

    def _sign(self) -> None:
        from fmstack.model.data.minhash import signatures
        from fmstack.model.data.shingles import fingerprints

        if not self.pending or self.dedup is None:
            return
        fp = fingerprints(self.pending, self.dedup["ngram"])
        self.exact.append(fp.exact)
        if self.dedup["near"]:
            self.sigs.append(signatures(fp, self.dedup["num_perm"], self.dedup["seed"]))
        self.pending = []

    def save(self, folder: Path, name: str, words_in: list[int]) -> None:
        """`NAME.npz` (lengths, exact hashes) and, for near duplicates, `NAME.sigs.npy` and `NAME.bands.npy`:
        plain .npy so that the global step can memory-map them instead of loading every shard."""
        self._sign()
        np.savez(
            folder / f"{name}.npz",
            words_in=np.array(words_in, dtype=np.int32),
            words_out=np.array(self.words_out, dtype=np.int32),
            exact=np.concatenate(self.exact) if self.exact else np.zeros(0, dtype=np.uint64),
        )
        if not (self.dedup and self.dedup["near"]):
            return
        from fmstack.model.data.minhash import verified_params

        perm = self.dedup["num_perm"]
        sigs = np.concatenate(self.sigs) if self.sigs else np.zeros((0, perm), dtype=np.uint32)
        np.save(folder / f"{name}.sigs.npy", sigs)
        np.save(folder / f"{name}.bands.npy", verified_params(self.dedup["threshold"], perm).band_hashes(sigs))


def write_shard(job: dict[str, Any]) -> dict[str, Any]:
    """Write one shard's surviving documents to the output (stage C): stage A's documents minus duplicates."""
    name, work, out = job["name"], Path(job["work"]), Path(job["out"])
    marker = work / "c" / f"{name}.json"
    if marker.exists():
        return json.loads(marker.read_text())
    removed = (
        np.load(work / "removed.npy", mmap_mode="r")[job["offset"] : job["offset"] + job["count"]]
        if job["dedup"]
        else None
    )
    src = work / "a" / f"{name}.parquet"
    dest = out / "data" / f"part-{name}.{'jsonl' if job['format'] == 'jsonl' else 'parquet'}"
    kept = _copy_kept(src, dest, removed, job["format"])
    result = {"name": name, "kept": kept, "file": str(dest.relative_to(out))}
    write_json(marker, result)
    return result


def _copy_kept(src: Path, dest: Path, removed: np.ndarray | None, fmt: str) -> int:
    tmp = dest.with_name(f".{dest.name}.tmp")
    kept, start = 0, 0
    pw = pq.ParquetWriter(tmp, DOC_SCHEMA, compression="zstd") if fmt == "parquet" else None
    with open(tmp, "wb") if pw is None else nullcontext() as f:
        for batch in read_docs(src):
            table = pa.Table.from_batches([batch])
            if removed is not None:
                table = table.filter(pa.array(~np.asarray(removed[start : start + table.num_rows])))
            start += batch.num_rows
            kept += table.num_rows
            if pw is not None:
                pw.write_table(table)
            else:
                for row in table.to_pylist():
                    row["meta"] = json.loads(row["meta"])
                    f.write((json.dumps(row, ensure_ascii=False) + "\n").encode())
    if pw is not None:
        pw.close()
    os.replace(tmp, dest)
    return kept
