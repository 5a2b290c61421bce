"""Packing token streams into fixed-length training blocks, written as they fill, and reading them back."""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from fmstack.core.errors import FmstackError, InvalidRequest
from fmstack.core.sources import sha256_of
from fmstack.model.data.tokenize._files import write_atomic

FLUSH_TOKENS = 1 << 20  # tokens buffered before whole blocks are written out


def pack_blocks(
    token_streams: Iterable[list[int]],
    block_size: int,
    bos_id: int | None,
    eos_id: int | None,
    out_dir: Path | str,
    fmt: str = "npy",
    *,
    vocab_size: int | None = None,
    tokenizer: str = "",
) -> dict[str, Any]:
    """Concatenate documents as [BOS] doc [EOS] and cut the stream into blocks of `block_size` tokens, the way
    nanoGPT and LitGPT prepare pretraining data: no padding, documents may span blocks, and the last partial block
    is dropped (`dropped_tokens` says how much). A None BOS or EOS is left out.

    npy: `blocks.bin`, a raw array of shape (n_blocks, block_size) to open with `load_blocks` as a memmap,
    uint16 when `vocab_size` ≤ 65536 (half the disk and page cache) else uint32 (also when the vocab size is not
    given). parquet: `blocks.parquet`, one list<int32> column `input_ids`, a row per block.

    Blocks are written as they fill (memory holds about FLUSH_TOKENS tokens), to a temporary file renamed into
    place; `manifest.json` is written last, so a directory with a manifest is always complete.
    """
    if fmt not in ("npy", "parquet"):
        raise InvalidRequest(f"pack format '{fmt}' is unknown; use 'npy' or 'parquet'.")
    if block_size < 1:
        raise InvalidRequest(f"block_size must be positive, got {block_size}.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)  # the old blocks are about to be replaced
    dtype = np.dtype(np.uint16 if vocab_size is not None and vocab_size <= 1 << 16 else np.uint32)
    writer = _NpyWriter(out / "blocks.bin", dtype) if fmt == "npy" else _ParquetWriter(out / "blocks.parquet")
    try:
        documents, rest = _write_stream(writer, token_streams, block_size, bos_id, eos_id, dtype)
        sha256 = writer.commit()
    except BaseException:
        writer.abort()
        raise
    manifest = {
        "format": fmt,
        "file": writer.path.name,
        "dtype": str(writer.dtype if fmt == "parquet" else dtype),
        "shape": [writer.rows, block_size],
        "n_blocks": writer.rows,
        "block_size": block_size,
        "bos_id": bos_id,
        "eos_id": eos_id,
        "tokenizer": tokenizer,
        "vocab_size": vocab_size,
        "documents": documents,
        "tokens": writer.rows * block_size,
        "dropped_tokens": len(rest),
        "sha256": sha256,
    }
    write_atomic(out / "manifest.json", json.dumps(manifest, indent=2))
    return manifest


def _write_stream(
    writer: _NpyWriter | _ParquetWriter,
    token_streams: Iterable[list[int]],
    size: int,
    bos_id: int | None,
    eos_id: int | None,
    dtype: np.dtype,
) -> tuple[int, np.ndarray]:
    """Write the whole blocks of the [BOS] doc [EOS] stream, about FLUSH_TOKENS tokens at a time; return the number
    of documents and the tokens left over."""
    bos, eos = (np.array([i], np.int64) if i is not None else np.zeros(0, np.int64) for i in (bos_id, eos_id))
    documents = 0
    pending: list[np.ndarray] = []
    pending_tokens = 0
    for ids in token_streams:
        pending.append(np.concatenate((bos, np.asarray(ids, np.int64), eos)))
        pending_tokens += len(pending[-1])
        documents += 1
        if pending_tokens >= FLUSH_TOKENS:
            pending = [_write_blocks(writer, pending, size, dtype)]
            pending_tokens = len(pending[0])
    return documents, _write_blocks(writer, pending, size, dtype)


def _write_blocks(
    writer: _NpyWriter | _ParquetWriter, pieces: list[np.ndarray], size: int, dtype: np.dtype
) -> np.ndarray:
    """Write the whole blocks in the concatenation of `pieces`; return the tokens left over."""
    flat = np.concatenate(pieces) if pieces else np.zeros(0, np.int64)
    if len(flat) and (flat.min() < 0 or flat.max() > np.iinfo(dtype).max):
        bad = int(flat.max() if flat.max() > np.iinfo(dtype).max else flat.min())
        raise InvalidRequest(f"token id {bad} does not fit {dtype}: pass the tokenizer's vocab_size to pack_blocks.")
    whole = len(flat) // size * size
    if whole:
        writer.write(flat[:whole].astype(dtype).reshape(-1, size))
    return flat[whole:]


class _NpyWriter:
    """Raw rows appended to a temporary file and hashed as they go; renamed into place on commit."""

    def __init__(self, path: Path, dtype: np.dtype):
        self.path, self.dtype, self.rows = path, dtype, 0
        self.tmp = path.with_name(path.name + ".tmp")
        self.file = self.tmp.open("wb")
        self.digest = hashlib.sha256()

    def write(self, blocks: np.ndarray) -> None:
        data = np.ascontiguousarray(blocks).tobytes()
        self.file.write(data)
        self.digest.update(data)
        self.rows += len(blocks)

    def commit(self) -> str:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp, self.path)
        return self.digest.hexdigest()

    def abort(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)


class _ParquetWriter:
    """A row group per flush of blocks; the file is hashed after it is closed (Parquet writes its footer last)."""

    dtype = np.dtype(np.int32)

    def __init__(self, path: Path):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.path, self.rows = path, 0
        self.tmp = path.with_name(path.name + ".tmp")
        self.writer = pq.ParquetWriter(self.tmp, pa.schema([("input_ids", pa.list_(pa.int32()))]))

    def write(self, blocks: np.ndarray) -> None:
        import pyarrow as pa

        n, size = blocks.shape
        offsets = np.arange(0, (n + 1) * size, size, dtype=np.int32)
        column = pa.ListArray.from_arrays(pa.array(offsets), pa.array(blocks.astype(np.int32).ravel()))
        self.writer.write_table(pa.table({"input_ids": column}))
        self.rows += n

    def commit(self) -> str:
        self.writer.close()
        sha256 = sha256_of(self.tmp)
        os.replace(self.tmp, self.path)
        return sha256

    def abort(self) -> None:
        self.writer.close()
        self.tmp.unlink(missing_ok=True)


def load_blocks(out_dir: Path | str, verify: bool = False) -> np.ndarray:
    """The blocks `pack_blocks` wrote, shape (n_blocks, block_size): a read-only memmap for npy (nothing is read
    until used), an in-memory array for parquet. `verify` checks the sha256 in the manifest first."""
    out = Path(out_dir)
    if not (out / "manifest.json").is_file():
        raise FmstackError(f"{out} has no manifest.json: it is not packed blocks, or packing did not finish.")
    m = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    path, shape, dtype = out / m["file"], tuple(m["shape"]), np.dtype(m["dtype"])
    if verify and sha256_of(path) != m["sha256"]:
        raise FmstackError(f"{path} does not match the sha256 in its manifest; pack the blocks again.")
    if m["format"] == "parquet":
        import pyarrow.parquet as pq

        column = pq.read_table(path, columns=["input_ids"]).column("input_ids").combine_chunks()
        return column.flatten().to_numpy().astype(dtype).reshape(shape)
    if path.stat().st_size != math.prod(shape) * dtype.itemsize:
        raise FmstackError(f"{path} has {path.stat().st_size} bytes, not the {shape} {dtype} its manifest says.")
    if shape[0] == 0:
        return np.zeros(shape, dtype)  # an empty file cannot be memory-mapped
    return np.memmap(path, dtype=dtype, mode="r", shape=shape)
