"""The HTML report of a pipeline run: what came in, what each rule removed or changed, the duplicate clusters, the
language mix, and document and token lengths before and after — read from the run's output folder alone
(manifest.json, lengths.npz, clusters.jsonl, rejected.txt), so it can be rebuilt any time."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from fmstack.core.htmlpage import page, png_uri

_e = html.escape


def write_report(out: Path, timings: dict[str, float] | None = None) -> Path:
    """report.html in the run's folder."""
    manifest = json.loads((out / "manifest.json").read_text())
    body = [_header(manifest, timings), _counts(manifest), _plots(out, manifest), _clusters(out), _rejected(out)]
    path = out / "report.html"
    path.write_text(page("fmstack data report", body), encoding="utf-8")
    return path


def _header(m: dict[str, Any], timings: dict[str, float] | None) -> str:
    inputs = ", ".join(_e(i["path"]) for i in m["inputs"][:5]) + (" …" if len(m["inputs"]) > 5 else "")
    t = f" in {timings['total']:.1f} s" if timings and timings.get("total") else ""
    return (
        f"<h1>Data pipeline report</h1><p class='meta'>fmstack {m['fmstack']} · pipeline {m['fingerprint']}{t}"
        f" · inputs: {inputs}</p><details><summary>config</summary><pre>"
        f"{_e(json.dumps(m['config'], indent=1))}</pre></details>"
    )


def _counts(m: dict[str, Any]) -> str:
    c = m["counts"]
    rows = [
        ("read", c["read"]),
        ("rejected (unreadable)", c["rejected"]),
        ("after cleaning", c["after_clean"]),
        ("after deduplication", c["after_dedup"]),
    ]
    head = "<tr><th>documents</th><th>count</th><th>of read</th></tr>"
    body = "".join(f"<tr><td>{k}</td><td>{v:,}</td><td>{v / max(c['read'], 1):.1%}</td></tr>" for k, v in rows)
    rules = _rule_table(m["clean"])
    return f"<h2>Before and after</h2><table>{head}{body}</table>{rules}"


def _rule_table(clean: dict[str, Any]) -> str:
    if not clean["dropped"] and not clean["changed"]:
        return ""
    rows = [(r, n, "dropped") for r, n in clean["dropped"].items()] + [
        (r, n, "changed") for r, n in clean["changed"].items()
    ]
    body = "".join(f"<tr><td>{_e(r)}</td><td>{what}</td><td>{n:,}</td></tr>" for r, n, what in rows)
    return f"<h3>By rule</h3><table><tr><th>rule</th><th>effect</th><th>documents</th></tr>{body}</table>"


def _plots(out: Path, m: dict[str, Any]) -> str:
    figs = [_lengths(out), _rules(m["clean"])]
    if m.get("dedup"):
        figs.append(_cluster_sizes(m["dedup"]))
    if m.get("languages"):
        figs.append(_bars("Language mix (kept after cleaning)", m["languages"], "documents"))
    if m.get("tokenize"):
        figs.append(_token_lengths(m["tokenize"]))
    imgs = "".join(f'<img src="{png_uri(f)}" style="max-width:49%">' for f in figs if f is not None)
    return f"<h2>Plots</h2><div>{imgs}</div>{_token_summary(m.get('tokenize'))}"


def _lengths(out: Path) -> Figure | None:
    path = out / "lengths.npz"
    if not path.exists():
        return None
    d = np.load(path)
    fig = Figure(figsize=(6, 3.6), layout="constrained")
    ax = fig.add_subplot()
    series = [("read", d["words_in"]), ("after cleaning", d["words_clean"]), ("after dedup", d["words_final"])]
    top = max((int(x.max()) for _, x in series if len(x)), default=1)
    bins = np.logspace(0, np.log10(max(top, 10)) + 0.01, 40)
    for label, x in series:
        ax.hist(np.maximum(x, 1), bins=bins, histtype="step", linewidth=1.6, label=f"{label} ({len(x):,})")
    ax.set(xscale="log", xlabel="words per document", ylabel="documents", title="Document lengths")
    ax.legend(fontsize=8)
    return fig


def _bars(title: str, counts: dict[str, int], xlabel: str) -> Figure:
    items = sorted(counts.items(), key=lambda kv: kv[1])[-20:]
    fig = Figure(figsize=(6, max(2.4, 0.3 * len(items) + 1)), layout="constrained")
    ax = fig.add_subplot()
    ax.barh([k for k, _ in items], [v for _, v in items], color="#4c72b0")
    for i, (_, v) in enumerate(items):
        ax.text(v, i, f" {v:,}", va="center", fontsize=8)
    ax.set(title=title, xlabel=xlabel)
    return fig


def _rules(clean: dict[str, Any]) -> Figure | None:
    counts = {f"{r} (dropped)": n for r, n in clean["dropped"].items()}
    counts |= {f"{r} (changed)": n for r, n in clean["changed"].items()}
    return _bars("What each cleaning rule did", counts, "documents") if counts else None


def _cluster_sizes(dedup: dict[str, Any]) -> Figure:
    sizes = {f"{k} docs": v for k, v in sorted(dedup["cluster_sizes"].items(), key=lambda kv: int(kv[0]))}
    title = f"Duplicate clusters: {dedup['exact_removed']:,} exact + {dedup['near_removed']:,} near removed"
    return _bars(title, sizes or {"none": 0}, "clusters")


def _token_lengths(tok: dict[str, Any]) -> Figure | None:
    hist = tok["stats"].get("histogram")
    if not hist:
        return None
    fig = Figure(figsize=(6, 3.6), layout="constrained")
    ax = fig.add_subplot()
    edges, counts = np.asarray(hist["edges"]), np.asarray(hist["counts"])
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="#55a868")
    ax.set(xlabel="tokens per document", ylabel="documents", title=f"Token lengths ({tok['tokenizer']})")
    return fig


def _token_summary(tok: dict[str, Any] | None) -> str:
    if not tok:
        return ""
    s = tok["stats"]
    keys = [
        k for k in ("documents", "tokens", "words", "tokens_per_word", "chars_per_token", "vocab_coverage") if k in s
    ]
    rows = "".join(f"<tr><td>{k}</td><td>{_fmt(s[k])}</td></tr>" for k in keys)
    pack = tok.get("pack")
    packed = (
        (
            f"<p>Packed into {pack.get('n_blocks', pack.get('blocks', '?'))} blocks of {pack.get('block_size')} "
            f"tokens.</p>"
        )
        if pack
        else ""
    )
    note = "<p class='meta'>Rule of thumb: 100 tokens ≈ 75 English words (1.33 tokens per word).</p>"
    return f"<h2>Tokens</h2><table>{rows}</table>{note}{packed}"


def _fmt(v: Any) -> str:
    return f"{v:,.3f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else _e(str(v))


def _clusters(out: Path, limit: int = 10) -> str:
    path = out / "clusters.jsonl"
    if not path.exists() or not path.stat().st_size:
        return ""
    items = []
    with path.open(encoding="utf-8") as f:
        for line, _ in zip(f, range(limit), strict=False):
            c = json.loads(line)
            removed = "".join(
                f"<li>{_e(r['source'])}:{r['line']} — {r['kind']}, similarity {r['similarity']}: "
                f"<q>{_e(r['snippet'])}</q></li>"
                for r in c["removed"][:5]
            )
            items.append(
                f"<li><b>kept</b> {_e(c['kept']['source'])}:{c['kept']['line']}: "
                f"<q>{_e(c['kept']['snippet'])}</q><ul>{removed}</ul></li>"
            )
    return f"<h2>Duplicate clusters (first {limit}; all in clusters.jsonl)</h2><ol>{''.join(items)}</ol>"


def _rejected(out: Path, limit: int = 20) -> str:
    path = out / "rejected.txt"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    if not lines:
        return ""
    shown = "".join(f"<li><code>{_e(x)}</code></li>" for x in lines[:limit])
    return f"<h2>Rejected input ({len(lines):,}; all in rejected.txt)</h2><ul>{shown}</ul>"
