"""Test documents in every format (a real PDF writer included), and a shared embedding model."""

from __future__ import annotations

import functools
from pathlib import Path

from fmstack.app.rag import ChunkConfig, Rag
from fmstack.core.config import Settings
from fmstack.core.registry import Registry
from fmstack.core.store import open_store
from fmstack.engines.pool import EnginePool

WIKI_TITLES = [
    "Abraham Lincoln", "Aristotle", "An American in Paris", "Actrius", "Algeria",
    "Andre Agassi", "Alaska", "Apollo 11", "Albert Einstein", "Alberta",
    "Apollo 8", "Alabama", "Aardvark", "Achilles",
]  # fmt: skip


@functools.cache
def shared_pool() -> EnginePool:
    """One loaded MiniLM for all tests of a session (its files come from a package: no home needed)."""
    settings = Settings(home=Path("/nonexistent-fmstack-home"))
    return EnginePool(Registry(settings), settings)


def make_rag(home: Path, database_url: str | None = None) -> Rag:
    settings = Settings(home=home, database_url=database_url)
    return Rag(open_store(settings), settings, shared_pool())


def formats_collection(home: Path, name: str = "docs") -> Rag:
    """A Rag over `home` with one document per format ingested as `name` (chunks of 120 tokens, by structure)."""
    rag = make_rag(home)
    write_formats(home / "docs")
    rag.ingest(home / "docs", name, ChunkConfig(chunk_tokens=120, by="structure"))
    return rag


def pdf_bytes(pages: list[str], title: str | None = None) -> bytes:
    """A minimal valid PDF, one page per string (lines split on newlines), Helvetica, with an xref table."""

    def esc(s: str) -> str:
        return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    n = len(pages)
    objects: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        ("<< /Type /Pages /Kids [" + " ".join(f"{4 + 2 * i} 0 R" for i in range(n)) + f"] /Count {n} >>").encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for i, text in enumerate(pages):
        lines = text.split("\n")
        body = "BT /F1 11 Tf 14 TL 72 740 Td " + " ".join(f"({esc(line)}) Tj T*" for line in lines) + " ET"
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
            f"/Contents {5 + 2 * i} 0 R >>".encode()
        )
        stream = body.encode("latin-1")
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    info = None
    if title:
        objects.append(f"<< /Title ({esc(title)}) >>".encode())
        info = len(objects)
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, obj in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    trailer = f"<< /Size {len(objects) + 1} /Root 1 0 R" + (f" /Info {info} 0 R" if info else "") + " >>"
    out += f"trailer\n{trailer}\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


MARKDOWN = """# Kettle manual

The Zephyr kettle boils one litre of water in three minutes.

## Cleaning

Descale the Zephyr kettle every month with white vinegar.
Rinse it twice afterwards.

## Safety

Never open the lid while the water is boiling.
"""

HTML = """<!doctype html><html><head><title>Lighthouse guide</title><style>p{color:red}</style></head>
<body><nav>Home | About</nav>
<h1>Lighthouses</h1><p>The Fresnel lens was invented by Augustin-Jean Fresnel in 1822.</p>
<h2>Keepers</h2><p>Lighthouse keepers trimmed the wicks every four hours.</p>
<script>var x = "not text";</script><footer>Copyright</footer></body></html>
"""

JSONL = (
    '{"text": "Order 1001 shipped to Oslo by sea freight.", "team": "logistics", "year": 2024}\n'
    '{"text": "Invoice 77 for the Oslo order was paid in full.", "team": "finance", "year": 2024}\n'
    '{"text": "Order 1002 shipped to Lima by air freight.", "team": "logistics", "year": 2023}\n'
)

PLAIN = """Basalt columns form when thick lava flows cool slowly and contract.

The Giant's Causeway in Northern Ireland has about forty thousand of these columns.
"""

PDF_PAGES = [
    "Quarterly report\nRevenue from the glacier tours grew by twelve percent.",
    "Outlook\nThe company plans a new route to the Vatnajokull ice cave next spring.",
]


def write_formats(folder: Path) -> dict[str, Path]:
    """One document per supported format."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "md": folder / "kettle.md",
        "html": folder / "lighthouse.html",
        "jsonl": folder / "orders.jsonl",
        "txt": folder / "basalt.txt",
        "pdf": folder / "report.pdf",
    }
    files["md"].write_text(MARKDOWN)
    files["html"].write_text(HTML)
    files["jsonl"].write_text(JSONL)
    files["txt"].write_text(PLAIN)
    files["pdf"].write_bytes(pdf_bytes(PDF_PAGES, title="Glacier Tours report"))
    return files
