"""Cutting parsed documents into chunks the embedding model takes whole, counted in the model's own tokens.

- `tokens`: windows of `chunk_tokens` tokens, each starting `chunk_tokens - overlap` tokens after the previous,
  cut at token boundaries (so a chunk is an exact span of the document). JSONL records are never mixed.
- `structure`: paragraphs packed into chunks of at most `chunk_tokens`, never across a heading section, a PDF
  page or a JSONL record; a paragraph that is too long is cut at sentence ends, and a sentence that is too long
  by tokens. `overlap` does not apply.

Every chunk keeps where it is: character span, heading path, pages, JSONL line and the record's fields.
"""

from __future__ import annotations

import bisect
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from fmstack.app.rag.loaders import Block, Parsed
from fmstack.core.errors import InvalidRequest

STRATEGIES = ("tokens", "structure")


@dataclass(frozen=True)
class ChunkConfig:
    """`contextual`: every chunk's heading path starts with its document's title, so the title is embedded and
    keyword-indexed with each passage (Anthropic's "contextual retrieval", without the model-written line)."""

    chunk_tokens: int = 200
    overlap: int = 40
    by: str = "tokens"
    contextual: bool = False

    def check(self, max_tokens: int) -> None:
        if self.by not in STRATEGIES:
            raise InvalidRequest(f"--by must be one of {', '.join(STRATEGIES)}, not '{self.by}'.", param="by")
        if not 16 <= self.chunk_tokens <= max_tokens:
            raise InvalidRequest(
                f"--chunk-tokens must be between 16 and {max_tokens} (what the embedding model takes whole, "
                f"leaving room for the heading), not {self.chunk_tokens}.",
                param="chunk_tokens",
            )
        if not 0 <= self.overlap < self.chunk_tokens // 2 + 1:
            raise InvalidRequest(
                f"--overlap must be between 0 and half of --chunk-tokens ({self.chunk_tokens // 2}), "
                f"not {self.overlap}.",
                param="overlap",
            )

    @property
    def key(self) -> str:
        """Stored with each document: different settings mean its chunks must be made again."""
        key = f"{self.by}:{self.chunk_tokens}:{self.overlap if self.by == 'tokens' else 0}"
        return key + (":contextual" if self.contextual else "")


@dataclass
class Chunk:
    text: str
    start: int
    end: int
    tokens: int
    heading: tuple[str, ...] = ()
    page: int | None = None
    page_end: int | None = None
    line: int | None = None
    meta: dict = field(default_factory=dict)

    @property
    def heading_text(self) -> str | None:
        return " > ".join(h for h in self.heading if h) or None

    @property
    def embed_text(self) -> str:
        """What is embedded and hashed: the heading path gives a passage its subject ("He was…" whom?)."""
        heading = self.heading_text
        return f"{heading}\n{self.text}" if heading else self.text

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.embed_text.encode()).hexdigest()


class Tokenizer:
    """The embedding model's own tokenizer (tokenizer.json), without truncation, padding or special tokens."""

    def __init__(self, path: Path):
        from tokenizers import Tokenizer as HFTokenizer

        self._tok = HFTokenizer.from_file(str(path))
        self._tok.no_truncation()
        self._tok.no_padding()

    def offsets(self, text: str) -> list[tuple[int, int]]:
        return self._tok.encode(text, add_special_tokens=False).offsets

    def count(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        return [len(e.ids) for e in self._tok.encode_batch(texts, add_special_tokens=False)]


def chunk_document(parsed: Parsed, config: ChunkConfig, tokenizer: Tokenizer) -> list[Chunk]:
    if not parsed.blocks:
        return []
    split = _by_tokens if config.by == "tokens" else _by_structure
    chunks = split(parsed, config, tokenizer)
    if config.contextual and parsed.title:
        for chunk in chunks:
            if not chunk.heading or chunk.heading[0] != parsed.title:
                chunk.heading = (parsed.title, *chunk.heading)
    return chunks


def _segments(parsed: Parsed) -> list[list[Block]]:
    """Runs of blocks a token window may span: all of a document, except that JSONL records stand alone."""
    if parsed.format != "jsonl":
        return [parsed.blocks]
    return [[b] for b in parsed.blocks]


def _by_tokens(parsed: Parsed, config: ChunkConfig, tokenizer: Tokenizer) -> list[Chunk]:
    chunks: list[Chunk] = []
    step = config.chunk_tokens - config.overlap
    for blocks in _segments(parsed):
        seg_start, seg_end = blocks[0].start, blocks[-1].end
        offsets = tokenizer.offsets(parsed.text[seg_start:seg_end])
        starts = [b.start for b in blocks]
        for i in range(0, len(offsets), step):
            j = min(i + config.chunk_tokens, len(offsets))
            start, end = seg_start + offsets[i][0], seg_start + offsets[j - 1][1]
            chunks.append(_chunk(parsed, blocks, starts, start, end, j - i))
            if j == len(offsets):
                break
    return chunks


def _chunk(parsed: Parsed, blocks: list[Block], starts: list[int], start: int, end: int, tokens: int) -> Chunk:
    first = blocks[max(0, bisect.bisect_right(starts, start) - 1)]
    last = blocks[max(0, bisect.bisect_left(starts, end) - 1)]
    pages = (first.page, last.page if last.page is not None else first.page)
    return Chunk(parsed.text[start:end], start, end, tokens, first.heading, *pages, first.line, dict(first.meta))


_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9À-Ý])")


def _by_structure(parsed: Parsed, config: ChunkConfig, tokenizer: Tokenizer) -> list[Chunk]:
    budget = config.chunk_tokens
    text = parsed.text
    counts = tokenizer.count([text[b.start : b.end] for b in parsed.blocks])
    # Units: whole paragraphs when they fit, else sentences, else token windows.
    units: list[tuple[int, int, int, Block, bool]] = []  # (start, end, tokens, block, starts a new group)
    previous: Block | None = None
    for block, n in zip(parsed.blocks, counts, strict=True):
        new_group = previous is None or block.boundary or block.heading != previous.heading
        new_group = new_group or (block.page != previous.page)
        previous = block
        if n <= budget:
            units.append((block.start, block.end, n, block, new_group))
            continue
        for k, (s, e, m) in enumerate(_split_long(text, block.start, block.end, budget, tokenizer)):
            units.append((s, e, m, block, new_group and k == 0))
    chunks: list[Chunk] = []
    current: list[tuple[int, int, int, Block, bool]] = []

    def flush() -> None:
        if current:
            s, e = current[0][0], current[-1][1]
            first, last = current[0][3], current[-1][3]
            page_end = last.page if last.page is not None else first.page
            tokens = sum(u[2] for u in current)
            chunks.append(Chunk(text[s:e], s, e, tokens, first.heading, first.page, page_end, first.line, first.meta))
            current.clear()

    for unit in units:
        if current and (unit[4] or sum(u[2] for u in current) + unit[2] > budget):
            flush()
        current.append(unit)
    flush()
    return chunks


def _split_long(text: str, start: int, end: int, budget: int, tokenizer: Tokenizer) -> list[tuple[int, int, int]]:
    """A paragraph over the budget: sentences packed up to it; a sentence over it cut into token windows."""
    piece = text[start:end]
    bounds = [0, *[m.end() for m in _SENTENCE_END.finditer(piece)], len(piece)]
    sentences = [(start + a, start + b) for a, b in zip(bounds, bounds[1:], strict=False) if piece[a:b].strip()]
    counts = tokenizer.count([text[a:b] for a, b in sentences])
    out: list[tuple[int, int, int]] = []
    for (a, b), n in zip(sentences, counts, strict=True):
        b = a + len(text[a:b].rstrip())
        if n <= budget:
            if out and out[-1][2] + n <= budget:
                out[-1] = (out[-1][0], b, out[-1][2] + n)
            else:
                out.append((a, b, n))
            continue
        offsets = tokenizer.offsets(text[a:b])
        for i in range(0, len(offsets), budget):
            j = min(i + budget, len(offsets))
            out.append((a + offsets[i][0], a + offsets[j - 1][1], j - i))
    return out
