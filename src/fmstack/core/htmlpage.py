"""Self-contained HTML reports (eval runs, data pipelines): one file with its plots inlined, to mail or archive."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable

from matplotlib.figure import Figure

CSS = """
body{font:14px/1.45 -apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:#1f2328;margin:0;
  background:#f6f8fa}
main{max-width:1240px;margin:0 auto;padding:24px 32px 64px;background:#fff;min-height:100vh}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:18px;margin:32px 0 12px;padding-bottom:4px;border-bottom:1px solid #d0d7de}
h3{font-size:15px;margin:20px 0 8px}
.meta{color:#57606a;margin:0 0 12px}.meta b{color:#1f2328;font-weight:600}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}
th,td{border:1px solid #d0d7de;padding:5px 9px;text-align:left;vertical-align:top}
th{background:#f6f8fa;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.ci{color:#57606a;font-size:12px}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600}
.pass{background:#dafbe1;color:#116329}.fail{background:#ffebe9;color:#a40e26}.none{background:#eaeef2;color:#57606a}
.warn{background:#fff8c5;border:1px solid #d4a72c;border-left:4px solid #bf8700;padding:8px 12px;margin:8px 0;
  border-radius:4px}
.warn.bad{background:#ffebe9;border-color:#cf222e;border-left-color:#cf222e}
.err{color:#cf222e}
code{background:#eaeef2;padding:1px 5px;border-radius:4px;font-size:12px}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(540px,1fr));gap:12px}
.plots img,.wide img{max-width:100%;border:1px solid #eaeef2;border-radius:4px}
table.cases{width:100%;table-layout:fixed}table.cases td{font-size:12px}
pre{margin:0;white-space:pre-wrap;word-break:break-word;max-height:14em;overflow:auto;font:12px/1.4 ui-monospace,
  SFMono-Regular,Menlo,Consolas,monospace}
"""


def png_uri(fig: Figure) -> str:
    """The figure as a data: URI, so the report needs no files beside it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def page(title: str, body: Iterable[str]) -> str:
    """A whole HTML document around the body's parts, with the shared style."""
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{CSS}</style></head><body><main>\n" + "\n".join(body) + "\n</main></body></html>\n"
    )
