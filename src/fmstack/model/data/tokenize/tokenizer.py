"""`TextTokenizer`: one interface over every tokenizer fmstack can name, and streaming encoding of many texts."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from fmstack.model.data.tokenize.resolve import Loaded, id_bound, resolve
from fmstack.model.data.tokenize.specials import DEFAULT_SPECIAL_TOKENS, ROLES

BATCH = 1000  # documents per encode_batch call: large enough for Rust's threads, small enough for memory


class TextTokenizer:
    """One interface over every tokenizer fmstack can name: ids without special tokens (packing adds BOS/EOS),
    decode, and the ids of BOS/EOS/PAD/UNK.

    Construction only stores the spec; the tokenizer loads on first use. Pickling carries the loaded Rust
    tokenizer (as JSON), so a worker process gets it without resolving the spec or parsing a GGUF again.
    """

    def __init__(self, spec: str):
        self.spec = str(spec)
        self._loaded: Loaded | None = None

    @classmethod
    def from_tokenizer(
        cls, tok: Tokenizer, name: str = "trained", special_tokens: tuple[str, ...] = DEFAULT_SPECIAL_TOKENS
    ) -> TextTokenizer:
        """Wrap a tokenizer in memory (e.g. just trained); the first four special tokens are BOS, EOS, PAD, UNK."""
        self = cls(name)
        ids = {role: tok.token_to_id(t) for role, t in zip(ROLES, special_tokens, strict=False)}
        self._loaded = Loaded(tok, ids, id_bound(tok))
        return self

    @property
    def name(self) -> str:
        return self.spec

    @property
    def _tok(self) -> Loaded:
        if self._loaded is None:
            self._loaded = resolve(self.spec)
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
    """Load a tokenizer now (so a bad spec fails here, not in a worker) from any of the forms in `resolve.ACCEPTED`."""
    tok = TextTokenizer(str(spec))
    tok._loaded = resolve(tok.spec)
    return tok


def encode_stream(tokenizer: TextTokenizer, texts: Iterable[str], batch_size: int = BATCH) -> Iterator[list[int]]:
    """Token ids of each text, in order, encoded `batch_size` documents at a time (one Rust call per batch)."""
    for batch in _batches(texts, batch_size):
        yield from tokenizer.encode_batch(batch)


def _batches(items: Iterable[Any], n: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for x in items:
        batch.append(x)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch
