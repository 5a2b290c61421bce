"""Write the second RAG corpus: the docstrings of 36 Python standard-library modules, one Markdown file each.

    python examples/rag/make_stdlib_corpus.py        # writes examples/rag/stdlib/*.md

Text that ships with Python itself (no download), and nothing like the Wikipedia example: technical reference
prose, many short sections (one per function or class, under `## name`), terse and repetitive vocabulary
("Return…", "object", "file"). `stdlib_questions.yaml` asks 30 hand-written questions about it, each naming the
module whose docstrings hold the answer (which never names the module itself), plus 6 about nothing in it.
The text depends on the Python version (the benchmark records it); `check_questions.py --stdlib` checks every
reference answer is in its module's file.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

MODULES = [
    "argparse", "base64", "bisect", "calendar", "collections", "contextlib", "csv", "dataclasses", "datetime",
    "decimal", "difflib", "enum", "fnmatch", "fractions", "functools", "glob", "gzip", "hashlib", "heapq", "hmac",
    "html", "itertools", "json", "pathlib", "queue", "random", "secrets", "shutil", "sqlite3", "statistics",
    "subprocess", "tempfile", "textwrap", "urllib.parse", "uuid", "zipfile",
]  # fmt: skip
MAX_MEMBERS = 30
HERE = Path(__file__).resolve().parent


def module_markdown(name: str) -> str:
    """The module's docstring under `# name`, then each public function's and class's under `## name.member`."""
    module = importlib.import_module(name)
    parts = [f"# {name}", "", inspect.getdoc(module) or "", ""]
    members = 0
    for member, obj in sorted(vars(module).items()):
        if member.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj) or inspect.isbuiltin(obj)):
            continue
        if getattr(obj, "__module__", None) not in (name, "_" + name.rsplit(".", 1)[-1]):
            continue
        doc = inspect.getdoc(obj)
        if not doc or members >= MAX_MEMBERS:
            continue
        parts += [f"## {name}.{member}", "", doc, ""]
        members += 1
    return "\n".join(parts).strip() + "\n"


def write_stdlib_corpus(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in MODULES:
        path = folder / f"{name}.md"
        path.write_text(module_markdown(name), encoding="utf-8")
        paths.append(path)
    return paths


if __name__ == "__main__":
    files = write_stdlib_corpus(HERE / "stdlib")
    chars = sum(len(p.read_text()) for p in files)
    print(f"wrote {len(files)} files, {chars:,} characters (Python {sys.version.split()[0]}) to {HERE / 'stdlib'}")
