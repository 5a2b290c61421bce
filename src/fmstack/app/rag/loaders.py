"""Reading files into text with structure: plain text, Markdown, HTML (selectolax), PDF (pypdf) and JSONL.

Each file becomes a `Parsed`: its text and its blocks (paragraphs and headings) with character offsets into that
text, the heading path above each block, the page (PDF) and the line (JSONL). Offsets of plain text and Markdown
are into the file's own text; of HTML into its visible text; of PDF into its pages' text joined by blank lines;
of JSONL into its records' texts joined by blank lines. A file that cannot be read raises `Unreadable` with the
reason, which ingestion reports and skips.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

FORMATS = {
    ".txt": "text",
    ".text": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
    ".jsonl": "jsonl",
}


class Unreadable(Exception):
    """A file that is unsupported or corrupt; the message is the reason shown to the user."""


@dataclass
class Block:
    """A paragraph (or a JSONL record) of a document: `text` is `Parsed.text[start:end]`."""

    start: int
    end: int
    heading: tuple[str, ...] = ()
    page: int | None = None
    line: int | None = None
    meta: dict = field(default_factory=dict)
    boundary: bool = False  # chunks never span the start of this block (a new record, section or page)


@dataclass
class Parsed:
    text: str
    blocks: list[Block]
    format: str
    title: str | None = None
    meta: dict = field(default_factory=dict)


def file_format(path: Path) -> str | None:
    return FORMATS.get(path.suffix.lower())


def parse_file(path: Path, data: bytes, text_field: str = "text") -> Parsed:
    fmt = file_format(path)
    if fmt is None:
        raise Unreadable(f"unsupported file type '{path.suffix or path.name}' (supported: {', '.join(FORMATS)})")
    if fmt == "pdf":
        return _pdf(data)
    text = _decode(data)
    if fmt == "markdown":
        return _markdown(text)
    if fmt == "html":
        return _html(text)
    if fmt == "jsonl":
        return _jsonl(text, text_field)
    return _plain(text, path)


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise Unreadable(f"not UTF-8 text (byte {exc.start}: {exc.reason})") from None


_PARA = re.compile(r"\n[ \t]*\n")


def _paragraphs(text: str, offset: int = 0) -> list[tuple[int, int]]:
    """(start, end) of each non-blank paragraph of `text` (split at blank lines), shifted by `offset`, trimmed."""
    spans, pos = [], 0
    for match in [*_PARA.finditer(text), None]:
        end = match.start() if match else len(text)
        chunk = text[pos:end]
        stripped = chunk.strip()
        if stripped:
            lead = len(chunk) - len(chunk.lstrip())
            spans.append((offset + pos + lead, offset + pos + lead + len(stripped)))
        if match:
            pos = match.end()
    return spans


def _plain(text: str, path: Path) -> Parsed:
    title = path.stem.replace("_", " ")
    blocks = [Block(s, e, (title,)) for s, e in _paragraphs(text)]
    return Parsed(text, blocks, "text", title)


_MD_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.M)
_MD_FENCE = re.compile(r"^(```|~~~)", re.M)


def _markdown(text: str) -> Parsed:
    """ATX headings (`#` to `######`) open sections; paragraphs are split at blank lines, except inside fences."""
    fences = _fenced_ranges(text)
    headings = [m for m in _MD_HEADING.finditer(text) if not any(a <= m.start() < b for a, b in fences)]
    blocks: list[Block] = []
    path: list[tuple[int, str]] = []  # (level, title)
    title = None
    bounds = [(0, None), *[(m.start(), m) for m in headings]]
    for i, (start, match) in enumerate(bounds):
        end = bounds[i + 1][0] if i + 1 < len(bounds) else len(text)
        body_start = start
        if match is not None:
            level, name = len(match.group(1)), match.group(2).strip()
            path = [(lv, t) for lv, t in path if lv < level] + [(level, name)]
            title = title or (name if level == 1 else None)
            body_start = match.end()
        heading = tuple(t for _, t in path)
        spans = _paragraphs_outside_fences(text, body_start, end, fences)
        for j, (s, e) in enumerate(spans):
            blocks.append(Block(s, e, heading, boundary=j == 0 and match is not None))
    return Parsed(text, blocks, "markdown", title or (headings[0].group(2).strip() if headings else None))


def _fenced_ranges(text: str) -> list[tuple[int, int]]:
    marks = [m.start() for m in _MD_FENCE.finditer(text)]
    return [(marks[i], marks[i + 1] + 3) for i in range(0, len(marks) - 1, 2)]


def _paragraphs_outside_fences(text: str, start: int, end: int, fences: list[tuple[int, int]]) -> list[tuple]:
    """Paragraphs of text[start:end]; a fenced code block stays one paragraph even with blank lines inside."""
    spans: list[tuple[int, int]] = []
    pos = start
    for a, b in fences:
        if b <= start or a >= end:
            continue
        spans += _paragraphs(text[pos:a], pos)
        spans.append((a, min(b, end)))
        pos = min(b, end)
    spans += _paragraphs(text[pos:end], pos)
    return spans


_HTML_DROP = ["script", "style", "noscript", "template", "iframe", "svg", "object", "embed", "head", "nav", "footer"]
_HTML_DROP += ["form", "button", "select"]
_BLOCK_TAGS = "p, li, pre, blockquote, dt, dd, tr, figcaption, caption, div, section, article, table, ul, ol, br"
_H_OPEN, _H_CLOSE = "\ue000", "\ue001"


def _html(html: str) -> Parsed:
    """Visible text, one block element per paragraph; h1–h6 open sections as in Markdown."""
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(html)
    title_node = tree.css_first("title")
    page_title = title_node.text(strip=True) if title_node is not None else None
    tree.strip_tags(_HTML_DROP)
    for node in tree.css("h1, h2, h3, h4, h5, h6"):
        node.insert_before(f"\n\n{_H_OPEN}{node.tag[1]}")
        node.insert_after(f"{_H_CLOSE}\n\n")
    for node in tree.css(_BLOCK_TAGS):
        node.insert_after("\n\n")
    for node in tree.css("td, th"):
        node.insert_after(" ")
    root = tree.body or tree.root
    raw = root.text() if root is not None else ""
    # Rebuild the text without the heading marks, keeping offsets into what is stored.
    out: list[str] = []
    blocks: list[Block] = []
    path: list[tuple[int, str]] = []
    pos = 0
    new_section = False
    for part in re.split(r"\n[ \t\r\n]*\n", raw):
        part = re.sub(r"[ \t\r\n]+", " ", part).strip()
        if not part:
            continue
        if part.startswith(_H_OPEN) and _H_CLOSE in part:
            level = int(part[1])
            name = part[2 : part.index(_H_CLOSE)].strip()
            path = [(lv, t) for lv, t in path if lv < level] + [(level, name)]
            new_section = True
            part = name
        else:
            part = part.replace(_H_OPEN, "").replace(_H_CLOSE, "")
            blocks.append(Block(pos, pos + len(part), tuple(t for _, t in path), boundary=new_section))
            new_section = False
        out.append(part)
        pos += len(part) + 2
    text = "\n\n".join(out)
    first_h1 = next((t for lv, t in path if lv == 1), None)
    if not text.strip():
        raise Unreadable("no visible text in the HTML")
    return Parsed(text, blocks, "html", page_title or first_h1)


def _pdf(data: bytes) -> Parsed:
    import io

    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        pages = [page.extract_text() or "" for page in reader.pages]
        info = reader.metadata
        title = str(info.title).strip() if info is not None and info.title else None
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, OSError, IndexError) as exc:
        raise Unreadable(f"corrupt PDF ({type(exc).__name__}: {exc})") from None
    if not any(p.strip() for p in pages):
        raise Unreadable("the PDF has no extractable text (scanned images need OCR first)")
    out, blocks, pos = [], [], 0
    for number, page in enumerate(pages, 1):
        page = page.replace("\r\n", "\n")
        for j, (s, e) in enumerate(_paragraphs(page, pos)):
            blocks.append(Block(s, e, (title,) if title else (), page=number, boundary=j == 0))
        out.append(page)
        pos += len(page) + 2
    return Parsed("\n\n".join(out), blocks, "pdf", title, {"pages": len(pages)})


def _jsonl(text: str, text_field: str) -> Parsed:
    """One block per record: `text_field` is its text, its other scalar fields its metadata (filterable)."""
    out, blocks, pos, bad = [], [], 0, []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            bad.append(f"line {number}: not valid JSON ({exc.msg})")
            continue
        value = record.get(text_field) if isinstance(record, dict) else None
        if not isinstance(value, str):
            bad.append(f"line {number}: no string field '{text_field}'")
            continue
        value = value.strip()
        if not value:
            continue
        meta = {k: v for k, v in record.items() if k != text_field and isinstance(v, str | int | float | bool)}
        heading = tuple(str(meta[k]) for k in ("title", "name") if k in meta)[:1]
        blocks.append(Block(pos, pos + len(value), heading, line=number, meta=meta, boundary=True))
        out.append(value)
        pos += len(value) + 2
    if bad and not blocks:
        raise Unreadable(f"no readable records ({bad[0]})")
    if bad:
        raise Unreadable(f"{len(bad)} unreadable record(s), first at {bad[0]}")
    return Parsed("\n\n".join(out), blocks, "jsonl")
