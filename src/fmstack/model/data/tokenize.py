"""Tokenizers for datasets: train a byte-level BPE, load any tokenizer fmstack can name, measure how a tokenizer
cuts a corpus, and pack token streams into fixed-length training blocks.

Everything streams: texts are read once per pass, encoded in batches (Rust does the work, in parallel), and
written incrementally, so memory stays bounded however large the corpus is. Statistics of shards add up to the
statistics of the whole, like `StepStats`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from fmstack.core.errors import FmstackError, InvalidRequest, ModelUnavailable
from fmstack.core.sources import sha256_of

DEFAULT_SPECIAL_TOKENS = ("<|bos|>", "<|eos|>", "<|pad|>", "<|unk|>")
ROLES = ("bos", "eos", "pad", "unk")  # the meaning of the first four special tokens, in order
RULE_OF_THUMB_TOKENS_PER_WORD = 100 / 75  # "100 tokens are about 75 English words" (OpenAI's rule)
BATCH = 1000  # documents per encode_batch call: large enough for Rust's threads, small enough for memory
FLUSH_TOKENS = 1 << 20  # tokens buffered before whole blocks are written out
HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
ACCEPTED = (
    "a directory with tokenizer.json (or a Hugging Face checkpoint), a tokenizer .json file, a .gguf file, "
    "a registry model name (see `fmstack models`), or a Hugging Face Hub name like 'org/name'"
)
# When a tokenizer.json comes without config files, its roles are guessed from these common spellings.
GUESSES = {
    "bos": ("<|bos|>", "<s>", "<|begin_of_text|>", "<|startoftext|>", "[CLS]"),
    "eos": ("<|eos|>", "</s>", "<|end_of_text|>", "<|endoftext|>", "[SEP]"),
    "pad": ("<|pad|>", "<pad>", "[PAD]"),
    "unk": ("<|unk|>", "<unk>", "[UNK]"),
}
# Encoder-only tokenizers (BERT) have no BOS/EOS; [CLS] and [SEP] play those parts.
FALLBACK_KEYS = {"bos": ("bos_token", "cls_token"), "eos": ("eos_token", "sep_token")}


# ---------------------------------------------------------------- training


def train_bpe(
    texts: Iterable[str],
    vocab_size: int,
    min_frequency: int = 2,
    special_tokens: tuple[str, ...] = DEFAULT_SPECIAL_TOKENS,
    byte_level: bool = True,
) -> Tokenizer:
    """Train a BPE tokenizer on a stream of texts.

    Byte-level (GPT-2 style, the default): every byte is in the base alphabet, so any text encodes without an
    unknown token and decode(encode(x)) == x exactly. Otherwise a SentencePiece-like BPE on characters, with "▁"
    marking spaces and unseen characters becoming the unk token. The first four `special_tokens` are the BOS, EOS,
    PAD and UNK tokens (ids 0-3); pass the same tuple to `save_tokenizer`.

    Training is deterministic: the same texts give the same tokenizer JSON, whatever the number of threads
    (RAYON_NUM_THREADS) or the hash seed, because the trainer breaks ties between merges by token id.
    """
    if len(special_tokens) < len(ROLES):
        raise InvalidRequest(f"special_tokens needs at least {len(ROLES)} tokens: BOS, EOS, PAD and UNK, in order.")
    alphabet = pre_tokenizers.ByteLevel.alphabet() if byte_level else []
    if vocab_size <= len(alphabet) + len(special_tokens):
        raise InvalidRequest(
            f"vocab_size {vocab_size} leaves no room for merges: the byte alphabet and special tokens alone take "
            f"{len(alphabet) + len(special_tokens)}. Use a larger vocab_size (thousands)."
        )
    if byte_level:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
    else:
        tok = Tokenizer(models.BPE(unk_token=special_tokens[3]))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
        tok.decoder = decoders.Metaspace(prepend_scheme="first")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(special_tokens),
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return tok


def save_tokenizer(
    tok: Tokenizer, out_dir: Path | str, special_tokens: tuple[str, ...] = DEFAULT_SPECIAL_TOKENS
) -> Path:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json, each atomically: the files
    `PreTrainedTokenizerFast.from_pretrained(out_dir)` and `AutoTokenizer.from_pretrained(out_dir)` read. Written by
    hand rather than by transformers' save_pretrained, which (5.x) no longer writes special_tokens_map.json and names
    a class 4.x does not know. The first four `special_tokens` are the BOS, EOS, PAD and UNK tokens."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    missing = [t for t in special_tokens if tok.token_to_id(t) is None]
    if missing:
        raise InvalidRequest(f"special tokens {missing} are not in the tokenizer's vocabulary.")
    roles = {f"{role}_token": token for role, token in zip(ROLES, special_tokens, strict=False)}
    extra = list(special_tokens[len(ROLES) :])
    specials = roles | ({"additional_special_tokens": extra} if extra else {})
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": False,  # else decode would change " ." to "." and break round trips
        "model_max_length": 1_000_000_000,
        **specials,
    }
    _write_atomic(out / "tokenizer.json", tok.to_str(pretty=True))
    _write_atomic(out / "tokenizer_config.json", json.dumps(config, indent=2))
    _write_atomic(out / "special_tokens_map.json", json.dumps(specials, indent=2))
    return out


# ---------------------------------------------------------------- loading


@dataclass
class _Loaded:
    backend: Tokenizer
    ids: dict[str, int | None]  # bos, eos, pad, unk -> token id, or None if the tokenizer has no such token
    vocab_size: int  # one more than the largest id, so every id indexes an array of this size

    def __post_init__(self) -> None:
        # Some tokenizer.json files truncate and pad (all-MiniLM-L6-v2 to 128 tokens): whole documents are wanted.
        self.backend.no_truncation()
        self.backend.no_padding()


class TextTokenizer:
    """One interface over every tokenizer fmstack can name: ids without special tokens (packing adds BOS/EOS),
    decode, and the ids of BOS/EOS/PAD/UNK.

    Construction only stores the spec; the tokenizer loads on first use. Pickling carries the loaded Rust
    tokenizer (as JSON), so a worker process gets it without resolving the spec or parsing a GGUF again.
    """

    def __init__(self, spec: str):
        self.spec = str(spec)
        self._loaded: _Loaded | None = None

    @classmethod
    def from_tokenizer(
        cls, tok: Tokenizer, name: str = "trained", special_tokens: tuple[str, ...] = DEFAULT_SPECIAL_TOKENS
    ) -> TextTokenizer:
        """Wrap a tokenizer in memory (e.g. just trained); the first four special tokens are BOS, EOS, PAD, UNK."""
        self = cls(name)
        ids = {role: tok.token_to_id(t) for role, t in zip(ROLES, special_tokens, strict=False)}
        self._loaded = _Loaded(tok, ids, _id_bound(tok))
        return self

    @property
    def name(self) -> str:
        return self.spec

    @property
    def _tok(self) -> _Loaded:
        if self._loaded is None:
            self._loaded = _resolve(self.spec)
        return self._loaded

    @property
    def backend(self) -> Tokenizer:
        """The underlying `tokenizers.Tokenizer`."""
        return self._tok.backend

    @property
    def vocab_size(self) -> int:
        return self._tok.vocab_size

    @property
    def bos_id(self) -> int | None:
        return self._tok.ids["bos"]

    @property
    def eos_id(self) -> int | None:
        return self._tok.ids["eos"]

    @property
    def pad_id(self) -> int | None:
        return self._tok.ids["pad"]

    @property
    def unk_id(self) -> int | None:
        return self._tok.ids["unk"]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, without special tokens. One call encodes the batch on all cores."""
        backend = self._tok.backend
        encode = getattr(backend, "encode_batch_fast", backend.encode_batch)  # _fast skips offsets (tokenizers≥0.21)
        return [e.ids for e in encode(list(texts), add_special_tokens=False)]

    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        return self._tok.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def __getstate__(self) -> dict[str, Any]:
        return {"spec": self.spec, "loaded": self._loaded}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.spec, self._loaded = state["spec"], state["loaded"]

    def __repr__(self) -> str:
        return f"TextTokenizer({self.spec!r})"


def load_tokenizer(spec: str | Path) -> TextTokenizer:
    """Load a tokenizer now (so a bad spec fails here, not in a worker) from any of the forms in ACCEPTED."""
    tok = TextTokenizer(str(spec))
    tok._loaded = _resolve(tok.spec)
    return tok


def _resolve(spec: str) -> _Loaded:
    """A path if one exists, else a registry name, else a Hub name; anything else is an error naming the forms."""
    path = Path(spec).expanduser()
    if path.exists():
        return _from_path(path)
    from fmstack.core.config import get_settings
    from fmstack.core.registry import Registry

    settings = get_settings()
    registry = Registry(settings)
    if spec in registry.specs:
        model = registry.get(spec)
        if model.engine == "openai":
            raise InvalidRequest(
                f"'{spec}' is a remote model: fmstack has no local tokenizer for it. Give its tokenizer as {ACCEPTED}."
            )
        return _from_path(model.local_path(settings))
    if HUB_NAME.match(spec):
        return _from_hub(spec, settings.models_dir / "hub")
    known = ", ".join(sorted(registry.specs))
    raise InvalidRequest(
        f"Tokenizer '{spec}' is not a file, directory, registry model or Hub name. Give {ACCEPTED}. "
        f"Registry models: {known}.",
        param="tokenizer",
    )


def _from_path(path: Path) -> _Loaded:
    if path.is_dir() and (path / "tokenizer.json").is_file():
        return _from_json(path / "tokenizer.json", _read_configs(path))
    if path.is_dir():
        return _from_transformers(str(path))  # a checkpoint with only e.g. a SentencePiece tokenizer.model
    if path.suffix == ".gguf":
        return _from_transformers(str(path.parent), gguf_file=path.name)
    if path.suffix == ".json":
        configs = _read_configs(path.parent) if path.name == "tokenizer.json" else {}
        return _from_json(path, configs)
    raise InvalidRequest(f"{path} is not a tokenizer. Give {ACCEPTED}.", param="tokenizer")


def _read_configs(folder: Path) -> dict[str, Any]:
    """tokenizer_config.json overlaid with special_tokens_map.json, as transformers reads them."""
    merged: dict[str, Any] = {}
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if (folder / name).is_file():
            merged |= json.loads((folder / name).read_text(encoding="utf-8"))
    return merged


def _from_json(path: Path, configs: dict[str, Any]) -> _Loaded:
    try:
        backend = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception for a malformed file
        raise InvalidRequest(f"{path} is not a Hugging Face tokenizers JSON file ({exc}).") from exc
    ids = {role: _role_id(backend, role, configs) for role in ROLES}
    return _Loaded(backend, ids, _id_bound(backend))


def _role_id(backend: Tokenizer, role: str, configs: dict[str, Any]) -> int | None:
    """The id of a role's token: from the config files if they name it, else a common spelling in the vocab."""
    for key in FALLBACK_KEYS.get(role, (f"{role}_token",)):
        token = configs.get(key)
        token = token.get("content") if isinstance(token, dict) else token
        if token and backend.token_to_id(token) is not None:
            return backend.token_to_id(token)
    found = (backend.token_to_id(t) for t in GUESSES[role])
    return next((i for i in found if i is not None), None)


def _from_transformers(location: str, **kwargs: Any) -> _Loaded:
    """GGUF files, Hub names and checkpoints without tokenizer.json go through transformers, which converts them
    to a fast (Rust) tokenizer; we keep that and the ids of the special tokens."""
    from transformers import AutoTokenizer

    try:
        hf = AutoTokenizer.from_pretrained(location, **kwargs)
    except Exception as exc:  # transformers raises many kinds for a missing or unreadable tokenizer
        raise InvalidRequest(f"transformers could not load a tokenizer from {location} ({exc}).") from exc
    backend = getattr(hf, "backend_tokenizer", None)
    if backend is None:
        raise InvalidRequest(f"{location} has only a slow (Python) tokenizer; fmstack needs a fast one.")
    ids = {
        "bos": _first_id(hf, "bos_token_id", "cls_token_id"),
        "eos": _first_id(hf, "eos_token_id", "sep_token_id"),
        "pad": hf.pad_token_id,
        "unk": hf.unk_token_id,
    }
    return _Loaded(backend, ids, max(_id_bound(backend), len(hf)))


def _first_id(hf: Any, *attrs: str) -> int | None:
    return next((getattr(hf, a) for a in attrs if getattr(hf, a, None) is not None), None)


def _from_hub(name: str, cache_dir: Path) -> _Loaded:
    """Cached Hub tokenizers load offline; otherwise probe the Hub first, so an offline machine gets an answer at
    once instead of transformers retrying for tens of seconds."""
    from huggingface_hub import constants

    from fmstack.core.sources import _reachable

    try:
        return _from_transformers(name, cache_dir=cache_dir, local_files_only=True)
    except InvalidRequest:
        pass
    if constants.HF_HUB_OFFLINE or not _reachable(constants.ENDPOINT):
        raise ModelUnavailable(
            f"Tokenizer '{name}' is not a local path or registry model, and the Hugging Face Hub cannot be reached "
            f"to download it. Connect once (it is cached afterwards), or give {ACCEPTED}."
        )
    return _from_transformers(name, cache_dir=cache_dir)


def _id_bound(backend: Tokenizer) -> int:
    """One more than the largest token id (vocabularies may have holes, so this can exceed their size)."""
    vocab = backend.get_vocab(with_added_tokens=True)
    return max(vocab.values(), default=-1) + 1


# ---------------------------------------------------------------- statistics


def encode_stream(tokenizer: TextTokenizer, texts: Iterable[str], batch_size: int = BATCH) -> Iterator[list[int]]:
    """Token ids of each text, in order, encoded `batch_size` documents at a time (one Rust call per batch)."""
    for batch in _batches(texts, batch_size):
        yield from tokenizer.encode_batch(batch)


@dataclass
class TokenStats:
    """How a tokenizer cuts a corpus. Sequence lengths are kept as exact counts per length (few distinct values),
    so percentiles are exact and stats of shards add up to the stats of the whole."""

    tokenizer: str = ""
    vocab_size: int = 0
    unk_id: int | None = None
    documents: int = 0
    words: int = 0
    characters: int = 0
    tokens: int = 0
    id_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    lengths: Counter[int] = field(default_factory=Counter)

    def update(self, text: str, ids: list[int]) -> None:
        self.documents += 1
        self.words += len(text.split())
        self.characters += len(text)
        self.tokens += len(ids)
        self.lengths[len(ids)] += 1
        if ids:
            counts = np.bincount(ids, minlength=len(self.id_counts))
            self.id_counts = _add_padded(self.id_counts, counts)

    def __add__(self, other: TokenStats) -> TokenStats:
        if self.tokenizer and other.tokenizer and self.tokenizer != other.tokenizer:
            raise ValueError(f"cannot add stats of tokenizers {self.tokenizer!r} and {other.tokenizer!r}")
        return TokenStats(
            self.tokenizer or other.tokenizer,
            max(self.vocab_size, other.vocab_size),
            self.unk_id if self.unk_id is not None else other.unk_id,
            self.documents + other.documents,
            self.words + other.words,
            self.characters + other.characters,
            self.tokens + other.tokens,
            _add_padded(self.id_counts, other.id_counts),
            self.lengths + other.lengths,
        )

    def __radd__(self, other: Any) -> TokenStats:
        return self if other == 0 else NotImplemented  # so that sum(shard_stats) works

    @property
    def tokens_per_word(self) -> float:
        return self.tokens / self.words if self.words else 0.0

    @property
    def words_per_token(self) -> float:
        return self.words / self.tokens if self.tokens else 0.0

    @property
    def chars_per_token(self) -> float:
        return self.characters / self.tokens if self.tokens else 0.0

    @property
    def vocab_coverage(self) -> float:
        """Fraction of the vocabulary that occurs at least once: low means a tokenizer trained on other text."""
        return int(np.count_nonzero(self.id_counts)) / self.vocab_size if self.vocab_size else 0.0

    @property
    def unk_fraction(self) -> float | None:
        """Fraction of tokens that are the unknown token (text the tokenizer cannot represent); None without one."""
        if self.unk_id is None:
            return None
        unk = int(self.id_counts[self.unk_id]) if self.unk_id < len(self.id_counts) else 0
        return unk / self.tokens if self.tokens else 0.0

    def percentile(self, p: float) -> int:
        """Nearest-rank percentile of tokens per document (numpy's method="inverted_cdf"), exact."""
        if not self.lengths:
            return 0
        values = sorted(self.lengths)
        cumulative = np.cumsum([self.lengths[v] for v in values])
        rank = max(1, math.ceil(p / 100 * self.documents))
        return int(values[int(np.searchsorted(cumulative, rank))])

    def histogram(self, bins: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """(counts, edges) of tokens per document, as np.histogram; default bins are powers of two, which read
        directly as context lengths."""
        values = np.fromiter(self.lengths.keys(), np.int64, len(self.lengths))
        weights = np.fromiter(self.lengths.values(), np.int64, len(self.lengths))
        if bins is None:
            top = int(values.max()) if len(values) else 1
            bins = np.array([0] + [2**k for k in range(max(1, math.ceil(math.log2(max(top, 2)))) + 1)])
        counts, edges = np.histogram(values, bins=bins, weights=weights)
        return counts.astype(np.int64), edges

    def to_dict(self) -> dict[str, Any]:
        counts, edges = self.histogram()
        return {
            "tokenizer": self.tokenizer,
            "documents": self.documents,
            "words": self.words,
            "characters": self.characters,
            "tokens": self.tokens,
            "tokens_per_word": round(self.tokens_per_word, 4),
            "words_per_token": round(self.words_per_token, 4),
            "rule_of_thumb_tokens_per_word": round(RULE_OF_THUMB_TOKENS_PER_WORD, 4),
            "tokens_per_word_vs_rule_of_thumb": round(self.tokens_per_word / RULE_OF_THUMB_TOKENS_PER_WORD, 4),
            "chars_per_token": round(self.chars_per_token, 4),
            "vocab_size": self.vocab_size,
            "vocab_used": int(np.count_nonzero(self.id_counts)),
            "vocab_coverage": round(self.vocab_coverage, 4),
            "unk_fraction": self.unk_fraction,
            "length_percentiles": {f"p{p}": self.percentile(p) for p in (50, 90, 99)}
            | {"max": max(self.lengths, default=0)},
            "histogram": {"edges": [int(e) for e in edges], "counts": counts.tolist()},
        }


def token_stats(tokenizer: TextTokenizer, texts: Iterable[str], batch_size: int = BATCH) -> TokenStats:
    """Statistics of `texts` under `tokenizer`, in one streaming pass (texts are not kept)."""
    stats = TokenStats(tokenizer.name, tokenizer.vocab_size, tokenizer.unk_id)
    for batch in _batches(texts, batch_size):
        for text, ids in zip(batch, tokenizer.encode_batch(batch), strict=True):
            stats.update(text, ids)
    return stats


def _add_padded(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros(max(len(a), len(b)), np.int64)
    out[: len(a)] += a
    out[: len(b)] += b
    return out


# ---------------------------------------------------------------- packing


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
    ends = [np.array([i], np.int64) if i is not None else np.zeros(0, np.int64) for i in (bos_id, eos_id)]
    documents = 0
    pending: list[np.ndarray] = []
    pending_tokens = 0
    try:
        for ids in token_streams:
            pending.append(np.concatenate((ends[0], np.asarray(ids, np.int64), ends[1])))
            pending_tokens += len(pending[-1])
            documents += 1
            if pending_tokens >= FLUSH_TOKENS:
                pending = [_write_blocks(writer, pending, block_size, dtype)]
                pending_tokens = len(pending[0])
        rest = _write_blocks(writer, pending, block_size, dtype)
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
    _write_atomic(out / "manifest.json", json.dumps(manifest, indent=2))
    return manifest


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


# ---------------------------------------------------------------- helpers


def _batches(items: Iterable[Any], n: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for x in items:
        batch.append(x)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
