"""Reading text datasets as shards: JSONL, Parquet, CSV, plain-text folders and Hugging Face datasets on disk.

A shard is a piece of one input that a worker reads on its own: a byte range of a JSONL file (cut at line starts,
so a 10 GB file streams in many pieces), a Parquet row group, a whole CSV file (quoted newlines make byte ranges
unsafe), a group of text files, or a row range of a saved dataset. Shards are planned once, in a fixed order, so
their outputs are the same whichever engine runs them, and a run that was killed redoes only unfinished shards.

Bad input never stops a read: a broken JSON line, a line that is not UTF-8, a row without text or an unreadable
file becomes a `Rejected` with its file and line, and the reader goes on.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from fmstack.core.errors import InvalidRequest
from fmstack.model.data.documents import Document, Rejected

JSONL = {".jsonl", ".ndjson"}
TEXT = {".txt", ".md", ".markdown", ".rst", ".text"}
SHARD_BYTES = 4 << 20  # small enough that 2 workers finish together on a 35 MB file, large enough to amortize
TEXT_FILES_PER_SHARD = 500
DATASET_ROWS_PER_SHARD = 10_000


@dataclass(frozen=True)
class Shard:
    """One unit of work. `start`/`stop` are byte offsets (JSONL), a row group (Parquet), or indexes into a sorted
    list of files (text) or rows (datasets); `first_line` numbers the shard's first line in its file."""

    index: int
    path: str
    kind: str
    start: int = 0
    stop: int = 0
    first_line: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def name(self) -> str:
        return f"{self.index:05d}"


@dataclass(frozen=True)
class Fields:
    """Which field holds the text and which the id; every other field is kept as metadata."""

    text: str = "text"
    id: str | None = None


def plan_shards(inputs: list[Path], shard_bytes: int = SHARD_BYTES) -> list[Shard]:
    """Shards of all inputs, in a deterministic order (inputs as given, files in a folder sorted)."""
    shards: list[Shard] = []
    for path in inputs:
        for kind, file in _files(path):
            for s in _plan_one(kind, file, shard_bytes):
                shards.append(Shard(len(shards), s.path, s.kind, s.start, s.stop, s.first_line))
    return shards


def _files(path: Path) -> Iterator[tuple[str, Path]]:
    if not path.exists():
        raise InvalidRequest(f"{path}: no such file or folder")
    if path.is_dir() and (path / "dataset_info.json").exists():
        yield "dataset", path
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        texts = [p for p in files if p.suffix.lower() in TEXT]
        for p in files:
            if p.suffix.lower() not in TEXT and _kind(p):
                yield _kind(p), p  # type: ignore[misc]
        if texts:
            yield "text", path
    elif kind := _kind(path):
        yield kind, path
    else:
        raise InvalidRequest(f"{path}: unknown format; use .jsonl, .json, .parquet, .csv, .txt/.md or a folder of them")


def _kind(p: Path) -> str | None:
    suffix = p.suffix.lower()
    if suffix in JSONL:
        return "jsonl"
    if suffix == ".json":
        return "json"
    if suffix == ".parquet":
        return "parquet"
    if suffix in {".csv", ".tsv"}:
        return "csv"
    if suffix in TEXT:
        return "text"
    return None


def _plan_one(kind: str, path: Path, shard_bytes: int) -> Iterator[Shard]:
    if kind == "jsonl":
        yield from _plan_jsonl(path, shard_bytes)
    elif kind == "parquet":
        for g in range(max(1, _row_groups(path))):
            yield Shard(0, str(path), kind, g, g + 1)
    elif kind == "text" and path.is_dir():
        n = sum(1 for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT and not p.name.startswith("."))
        for start in range(0, n, TEXT_FILES_PER_SHARD):
            yield Shard(0, str(path), kind, start, min(n, start + TEXT_FILES_PER_SHARD))
    elif kind == "dataset":
        n = _dataset_rows(path)
        for start in range(0, max(n, 1), DATASET_ROWS_PER_SHARD):
            yield Shard(0, str(path), kind, start, min(n, start + DATASET_ROWS_PER_SHARD))
    else:
        yield Shard(0, str(path), kind, 0, 0)


def _row_groups(path: Path) -> int:
    try:
        return pq.ParquetFile(path).num_row_groups
    except Exception:  # noqa: BLE001 — an unreadable file is reported when its shard is read
        return 1


def _dataset_rows(path: Path) -> int:
    from datasets import load_from_disk

    return len(load_from_disk(str(path)))


def _plan_jsonl(path: Path, shard_bytes: int) -> Iterator[Shard]:
    """Cut at line starts near every `shard_bytes`, counting lines on the way so each shard knows its first line
    number: one sequential read of the file at disk speed."""
    size = path.stat().st_size
    start, line = 0, 1
    with path.open("rb") as f:
        while start < size:
            f.seek(start)
            chunk_lines = 0
            read = 0
            while read < shard_bytes:
                block = f.read(min(1 << 20, shard_bytes - read))
                if not block:
                    break
                chunk_lines += block.count(b"\n")
                read += len(block)
            tail = f.readline()  # finish the line the cut fell into
            stop = min(size, start + read + len(tail))
            yield Shard(0, str(path), "jsonl", start, stop, line)
            line += chunk_lines + (1 if tail.endswith(b"\n") else 0)
            start = stop


def read_shard(shard: Shard, fields: Fields = Fields(), root: Path | None = None) -> Iterator[Document | Rejected]:
    """The documents of one shard, and what could not be read, in file order."""
    readers = {
        "json": _read_json,
        "jsonl": _read_jsonl,
        "parquet": _read_parquet,
        "csv": _read_csv,
        "text": _read_text,
        "dataset": _read_dataset,
    }
    label = _label(Path(shard.path), root)
    try:
        yield from readers[shard.kind](shard, fields, label)
    except (OSError, ValueError) as exc:
        yield Rejected(label, 0, f"cannot read: {exc}")


def _label(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return str(path.resolve().relative_to(root.resolve()))
        except ValueError:
            pass
    return str(path)


def _document(row: Any, fields: Fields, label: str, line: int) -> Document | Rejected:
    if not isinstance(row, dict):
        return Rejected(label, line, f"expected a JSON object, got {type(row).__name__}")
    text = row.get(fields.text)
    if not isinstance(text, str):
        got = "missing" if text is None else f"a {type(text).__name__}"
        return Rejected(label, line, f"field {fields.text!r} is {got}; it must be a string")
    ident = row.get(fields.id) if fields.id else None
    meta = {k: v for k, v in row.items() if k not in (fields.text, fields.id)}
    return Document(str(ident) if ident is not None else f"{label}:{line}", text, label, line, meta)


def _read_jsonl(shard: Shard, fields: Fields, label: str) -> Iterator[Document | Rejected]:
    with open(shard.path, "rb") as f:
        f.seek(shard.start)
        line = shard.first_line
        pos = shard.start
        while pos < shard.stop:
            raw = f.readline()
            if not raw:
                break
            pos += len(raw)
            if raw.strip():
                yield _parse_json_line(raw, fields, label, line)
            line += 1


def _parse_json_line(raw: bytes, fields: Fields, label: str, line: int) -> Document | Rejected:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejected(label, line, f"not UTF-8: byte 0x{raw[exc.start]:02x} at column {exc.start + 1}")
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        return Rejected(label, line, f"broken JSON: {exc.msg} (column {exc.colno})")
    return _document(row, fields, label, line)


def _read_json(shard: Shard, fields: Fields, label: str) -> Iterator[Document | Rejected]:
    """A .json file: an array of records (numbered from 1, as `line`), or JSON lines under another name."""
    raw = Path(shard.path).read_bytes()
    if not raw.lstrip().startswith(b"["):
        yield from _read_jsonl(Shard(shard.index, shard.path, "jsonl", 0, len(raw)), fields, label)
        return
    try:
        rows = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        yield Rejected(label, getattr(exc, "lineno", 0), f"not a valid JSON array: {exc}; the whole file is skipped")
        return
    for i, row in enumerate(rows, start=1):
        yield _document(row, fields, label, i)


def _read_parquet(shard: Shard, fields: Fields, label: str) -> Iterator[Document | Rejected]:
    pf = pq.ParquetFile(shard.path)
    row = 1 + sum(pf.metadata.row_group(g).num_rows for g in range(shard.start))
    for batch in pf.iter_batches(row_groups=[shard.start], batch_size=2048):
        for rec in batch.to_pylist():
            yield _document(rec, fields, label, row)
            row += 1


def _read_csv(shard: Shard, fields: Fields, label: str) -> Iterator[Document | Rejected]:
    data = Path(shard.path).read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        yield Rejected(label, line, f"not UTF-8: byte 0x{data[exc.start]:02x}; the whole file is skipped")
        return
    delimiter = "\t" if shard.path.endswith(".tsv") else ","
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        for rec in reader:
            yield _document(rec, fields, label, reader.line_num)
    except csv.Error as exc:
        yield Rejected(label, reader.line_num, f"broken CSV: {exc}")


def _read_text(shard: Shard, fields: Fields, label: str) -> Iterator[Document | Rejected]:
    """One document per file; the id is the file's path relative to the folder."""
    folder = Path(shard.path)
    if folder.is_file():
        files, folder = [folder], folder.parent
    else:
        files = sorted(
            p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in TEXT and not p.name.startswith(".")
        )[shard.start : shard.stop]
    for p in files:
        rel = f"{label}/{p.relative_to(folder)}" if Path(shard.path).is_dir() else label
        try:
            yield Document(rel, p.read_bytes().decode("utf-8"), rel, 1, {})
        except UnicodeDecodeError as exc:
            yield Rejected(rel, 1, f"not UTF-8 at byte {exc.start}")


def _read_dataset(shard: Shard, fields: Fields, label: str) -> Iterator[Document | Rejected]:
    from datasets import load_from_disk

    ds = load_from_disk(shard.path)
    for i, rec in enumerate(ds.select(range(shard.start, shard.stop)), start=shard.start):
        yield _document(rec, fields, label, i + 1)
