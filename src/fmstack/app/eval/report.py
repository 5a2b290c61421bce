"""A run as one self-contained HTML file, and the summary table printed at the end of a run.

The HTML report is meant to be attached to a pull request or mailed around, so it carries everything inline: CSS,
and plots as base64 PNGs (matplotlib's Agg canvas through `Figure`, never pyplot, so it is safe off the main thread
and leaves no global state). No CDN, no fonts, no scripts: it opens the same offline, years later.

Every mean comes with a bootstrap 95% CI, because on a few dozen cases the CI is usually wider than the differences
people argue about. Judge metrics show how well the judge agreed with humans, and warn loudly when it never was
measured or agreed poorly: a judge score is only as good as that agreement.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from rich.console import Console
from rich.table import Table
from rich.text import Text

from fmstack.app.eval.results import MetricInfo, ResultRow, RunData
from fmstack.app.eval.stats import bootstrap_mean_ci
from fmstack.core.htmlpage import page, png_uri

TRUST_KAPPA = 0.4  # as calibrate.TRUST_KAPPA (not imported: that would load sklearn just to render a report)
WORST_N = 5
DISCRETE_MAX = 11  # a metric with at most this many distinct values is plotted as counts per value, not a box
PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974"]


# --- numbers ----------------------------------------------------------------------------------------------------


@dataclass
class Cell:
    """One variant × metric: what the summary table, the means plot and the terminal table show."""

    variant: str
    label: str
    mean: float
    low: float
    high: float
    n: int  # cases with a score
    passed: int
    judged: int  # cases with a pass/fail verdict (the metric has a threshold)
    errors: int  # the model failed, or the metric could not score

    @property
    def pass_rate(self) -> float | None:
        return self.passed / self.judged if self.judged else None


def value(row: ResultRow, label: str) -> float | None:
    """The row's score for a metric, or None if it has none (not applicable, or an error)."""
    score = row.scores.get(label)
    if score is None or score.value is None or score.error is not None or math.isnan(score.value):
        return None
    return float(score.value)


def _is_error(row: ResultRow, label: str) -> bool:
    """A failed model call is an error for every metric; otherwise only a metric that could not score."""
    score = row.scores.get(label)
    return row.error is not None or (score is not None and (score.error is not None or score.value is None))


def by_variant(run: RunData) -> dict[str, list[ResultRow]]:
    groups: dict[str, list[ResultRow]] = {v: [] for v in run.variants}
    for row in run.rows:
        groups[row.variant].append(row)
    return groups


def _cell(variant: str, rows: list[ResultRow], label: str) -> Cell:
    values = [v for r in rows if (v := value(r, label)) is not None]
    mean, low, high = bootstrap_mean_ci(values)
    verdicts = [s.passed for r in rows if (s := r.scores.get(label)) and s.passed is not None and r.error is None]
    errors = sum(_is_error(r, label) for r in rows)
    return Cell(variant, label, mean, low, high, len(values), sum(verdicts), len(verdicts), errors)


def summarize(run: RunData) -> dict[tuple[str, str], Cell]:
    """Every variant × metric cell, keyed by (variant, metric label)."""
    groups = by_variant(run)
    return {(v, m.label): _cell(v, rows, m.label) for v, rows in groups.items() for m in run.metrics}


def run_dict(run: RunData) -> dict[str, Any]:
    """A run as JSON data (`fmstack eval show --json`): its metrics and rows, and the cells of the summary table
    (mean, 95% CI, pass rate and errors per variant and metric), so a script reads what a person sees."""
    cells = [asdict(c) | {"pass_rate": c.pass_rate} for c in summarize(run).values()]
    return asdict(run) | {"variants": run.variants, "summary": cells}


def _fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def _ci(c: Cell) -> str:
    return "" if math.isnan(c.low) else f"[{_fmt(c.low)}, {_fmt(c.high)}]"


def _mean_cost(rows: list[ResultRow]) -> float:
    return float(np.mean([r.cost for r in rows])) if rows else math.nan


def _latencies(rows: list[ResultRow]) -> list[float]:
    """Latencies of the calls that answered: a failed call's time says nothing about the model's speed."""
    return [r.latency_ms for r in rows if r.error is None and r.latency_ms > 0]


def _kappa(m: MetricInfo) -> float | None:
    """The judge's headline kappa: quadratic-weighted for ordinal scores when calibration measured it."""
    a = m.judge_agreement or {}
    k = a.get("kappa_quadratic") if a.get("kappa_quadratic") is not None else a.get("kappa")
    return None if k is None or (isinstance(k, float) and math.isnan(k)) else float(k)


# --- plots --------------------------------------------------------------------------------------------------------


def _grid_figure(n_variants: int) -> Figure:
    """Same size for every plot in a grid, so that they show at the same scale side by side; taller for many
    variants. Constrained layout fits long variant names inside the figure instead of growing it."""
    return Figure(figsize=(6, max(3.4, 0.45 * n_variants + 1.2)), layout="constrained")


def _colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _short(label: str, limit: int = 40) -> str:
    """Cut in the middle: variants often differ only at the end ("model · prompt@v1" vs "@v2")."""
    if len(label) <= limit:
        return label
    half = (limit - 1) // 2
    return label[:half] + "…" + label[-half:]


def _draw_counts(ax: Any, series: dict[str, list[float]]) -> None:
    """Few distinct values (pass flags, 1–5 rubrics): grouped bars of the share of cases at each value."""
    levels = sorted({v for vs in series.values() for v in vs})
    width = 0.8 / max(1, len(series))
    for i, (variant, vs) in enumerate(series.items()):
        share = [vs.count(level) / len(vs) if vs else 0 for level in levels]
        xs = np.arange(len(levels)) + (i - (len(series) - 1) / 2) * width
        ax.bar(xs, share, width=width, color=_colour(i), label=_short(variant))
    ax.set_xticks(np.arange(len(levels)), [f"{level:g}" for level in levels])
    ax.set(xlabel="score", ylabel="share of cases")


def _draw_boxes(ax: Any, series: dict[str, list[float]]) -> None:
    """Continuous scores: a box per variant with every case as a jittered dot, since n is small."""
    rng = np.random.default_rng(0)
    names = list(series)[::-1]  # boxes are drawn bottom-up: reverse so the first variant is on top, as elsewhere
    data = [series[n] or [np.nan] for n in names]
    ax.boxplot(data, orientation="horizontal", widths=0.5, showfliers=False)
    for i, vs in enumerate(data, start=1):
        colour = _colour(len(names) - i)
        ax.scatter(vs, i + rng.uniform(-0.15, 0.15, len(vs)), s=12, alpha=0.6, color=colour, zorder=3)
    ax.set_yticks(range(1, len(names) + 1), [_short(n) for n in names])
    ax.set(xlabel="score")


def plot_distribution(run: RunData, metric: MetricInfo) -> str:
    """Score distribution of one metric, one series per variant."""
    series = {v: [x for r in rows if (x := value(r, metric.label)) is not None] for v, rows in by_variant(run).items()}
    fig = _grid_figure(len(series))
    ax = fig.subplots()
    distinct = {x for vs in series.values() for x in vs}
    if len(distinct) <= DISCRETE_MAX:
        _draw_counts(ax, series)
        ax.legend(fontsize=8, frameon=False)
    else:
        _draw_boxes(ax, series)
        if metric.threshold is not None:  # only on a score axis: the count chart's x axis is categorical
            ax.axvline(metric.threshold, color="grey", ls="--", lw=1)
    ax.set_title(metric.label, fontsize=11)
    return png_uri(fig)


def plot_means(run: RunData, cells: dict[tuple[str, str], Cell]) -> str:
    """Per-variant means with 95% CI error bars, one panel per metric (metrics have different scales)."""
    variants, metrics = run.variants, run.metrics
    cols = min(3, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    fig = Figure(figsize=(4 * cols, (0.45 * len(variants) + 1.2) * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    ys = np.arange(len(variants))[::-1]
    for k, m in enumerate(metrics):
        ax, cs = axes[k], [cells[(v, m.label)] for v in variants]
        means = np.array([c.mean for c in cs])
        err = np.array([[c.mean - c.low for c in cs], [c.high - c.mean for c in cs]])
        ax.barh(
            ys,
            np.nan_to_num(means),
            xerr=np.nan_to_num(err),
            color=[_colour(i) for i in range(len(cs))],
            capsize=3,
            height=0.6,
        )
        ax.set_yticks(ys, [_short(v) for v in variants] if k % cols == 0 else [""] * len(variants))
        if m.threshold is not None:
            ax.axvline(m.threshold, color="grey", ls="--", lw=1)
        ax.set_title(m.label + ("" if m.higher_is_better else " (lower is better)"), fontsize=10)
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    return png_uri(fig)


def _mean_tokens(rows: list[ResultRow]) -> float:
    return float(np.mean([r.prompt_tokens + r.completion_tokens for r in rows])) if rows else math.nan


def _cost_axis(run: RunData) -> tuple[str, Callable[[list[ResultRow]], float]]:
    """Mean cost per case in $; with no prices set (local models) mean tokens per case is the honest stand-in."""
    if any(r.cost for r in run.rows):
        return "mean cost per case ($)", _mean_cost
    return "mean tokens per case (no prices set)", _mean_tokens


def plot_cost_quality(run: RunData, cells: dict[tuple[str, str], Cell]) -> str:
    """Mean cost per case against the first metric's mean, one point per variant: is the dearer model worth it?"""
    metric = run.metrics[0]
    xlabel, cost = _cost_axis(run)
    fig = _grid_figure(len(run.variants))
    ax = fig.subplots()
    for i, (variant, rows) in enumerate(by_variant(run).items()):
        c = cells[(variant, metric.label)]
        yerr = [[c.mean - c.low], [c.high - c.mean]] if not math.isnan(c.low) else None
        ax.errorbar(
            [cost(rows)], [c.mean], yerr=yerr, fmt="o", color=_colour(i), capsize=3, ms=7, label=_short(variant)
        )
    ax.set(xlabel=xlabel, ylabel=metric.label + ("" if metric.higher_is_better else " (lower is better)"))
    ax.set_title(f"Cost vs {metric.label}", fontsize=11)
    ax.margins(x=0.2, y=0.15)
    if ax.get_xlim()[0] < 0:  # a cost is never negative: do not let the margin suggest one
        ax.set_xlim(left=-0.06 * ax.get_xlim()[1])
    ax.legend(fontsize=8, frameon=False, loc="best")
    return png_uri(fig)


def plot_latency(run: RunData) -> str:
    """Latency per variant (successful calls): a box per variant with every case as a dot."""
    series = {v: _latencies(rows) for v, rows in by_variant(run).items()}
    fig = _grid_figure(len(series))
    ax = fig.subplots()
    _draw_boxes(ax, series)
    ax.set(xlabel="latency (ms)")
    ax.set_title("Latency", fontsize=11)
    return png_uri(fig)


# --- html ----------------------------------------------------------------------------------------------------------


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def as_text(x: Any) -> str:
    """Inputs and references in a readable form: chat messages as "role: content", dicts as "key: value"."""
    if x is None:
        return ""
    if isinstance(x, str):
        return x
    if isinstance(x, list) and all(isinstance(m, dict) and "content" in m for m in x):
        return "\n".join(f"{m.get('role', '?')}: {m['content']}" for m in x)
    if isinstance(x, dict):
        return "\n".join(f"{k}: {v}" for k, v in x.items())
    if isinstance(x, list):
        return "\n".join(str(v) for v in x)
    return json.dumps(x, default=str)


def _badge(ok: bool | None, yes: str = "PASS", no: str = "FAIL") -> str:
    if ok is None:
        return '<span class="badge none">no threshold</span>'
    return f'<span class="badge {"pass" if ok else "fail"}">{yes if ok else no}</span>'


def _gate(run: RunData, rows: list[ResultRow]) -> tuple[int, int]:
    """(cases passing every threshold, cases): a case with an error or a failed threshold does not pass."""
    gated = [m.label for m in run.metrics if m.threshold is not None]

    def ok(r: ResultRow) -> bool:
        return r.error is None and all(r.scores[g].passed is True for g in gated if g in r.scores)

    return sum(ok(r) for r in rows), len(rows)


def _header_html(run: RunData) -> str:
    models = list(dict.fromkeys(r.model for r in run.rows))
    prompts = [p for p in dict.fromkeys(r.prompt for r in run.rows) if p]
    cases = len({r.case_id for r in run.rows})
    parts = [
        f"<h1>Eval report: {_e(run.suite)}</h1>",
        f'<p class="meta">run <b>{_e(run.id)}</b> · {_e(run.created_at)} · {cases} cases · '
        f"models: <b>{_e(', '.join(models))}</b>"
        + (f" · prompts: <b>{_e(', '.join(prompts))}</b>" if prompts else "")
        + "</p>",
    ]
    if any(m.threshold is not None for m in run.metrics):
        items = []
        for variant, rows in by_variant(run).items():
            ok, n = _gate(run, rows)
            items.append(f"{_badge(ok == n)} <b>{_e(variant)}</b>: {ok}/{n} cases pass every threshold")
        parts.append('<p class="meta">' + "<br>".join(items) + "</p>")
    return "\n".join(parts + _judge_warnings(run, brief=True))


def _judge_warnings(run: RunData, brief: bool = False) -> list[str]:
    """A visible warning per judge metric that was never calibrated or agrees poorly with humans."""
    out = []
    for m in run.metrics:
        if m.judge is None:
            continue
        kappa = _kappa(m)
        if m.judge_agreement is None:
            out.append(
                f'<div class="warn bad">⚠ <b>{_e(m.label)}</b> (judge {_e(m.judge)}): judge never calibrated: run '
                f"<code>fmstack eval calibrate</code> — its scores are unverified.</div>"
            )
        elif kappa is not None and kappa < TRUST_KAPPA:
            out.append(
                f'<div class="warn">⚠ <b>{_e(m.label)}</b> (judge {_e(m.judge)}): low agreement with human labels '
                f"(kappa {kappa:.2f} &lt; {TRUST_KAPPA}) — do not trust its scores unsupervised.</div>"
            )
    if brief and out:
        return [f'<div class="warn bad">⚠ {len(out)} judge metric(s) need attention — see <b>Judges</b> below.</div>']
    return out


def _summary_cell(c: Cell) -> str:
    return f'<td class="num">{_fmt(c.mean)} <span class="ci">{_ci(c)}</span></td>'


def _summary_html(run: RunData, cells: dict[tuple[str, str], Cell]) -> str:
    head = "<tr><th>variant</th><th>metric</th><th>mean [95% CI]</th><th>n</th><th>pass rate</th><th>errors</th></tr>"
    body = []
    for variant in run.variants:
        for i, m in enumerate(run.metrics):
            c = cells[(variant, m.label)]
            rate = "–" if c.pass_rate is None else f"{c.pass_rate:.0%} ({c.passed}/{c.judged})"
            first = f'<td rowspan="{len(run.metrics)}"><b>{_e(variant)}</b></td>' if i == 0 else ""
            direction = "" if m.higher_is_better else " ↓"
            err = f'<td class="num{" err" if c.errors else ""}">{c.errors}</td>'
            body.append(
                f"<tr>{first}<td>{_e(m.label)}{direction}</td>{_summary_cell(c)}"
                f'<td class="num">{c.n}</td><td class="num">{rate}</td>{err}</tr>'
            )
    note = '<p class="meta">↓ lower is better. Errors: the model failed, or the metric could not score the case.</p>'
    return f"<h2>Summary</h2><table>{head}{''.join(body)}</table>{note}"


def _agreement_cells(m: MetricInfo) -> str:
    a = m.judge_agreement
    if a is None:
        return '<td colspan="4"><span class="badge fail">never calibrated</span></td>'
    kappa = _kappa(m)
    style = "fail" if kappa is None or kappa < TRUST_KAPPA else "pass"
    acc = a.get("accuracy")
    return (
        f'<td class="num"><span class="badge {style}">{_fmt(kappa, 2)}</span></td>'
        f'<td class="num">{_fmt(acc, 2) if acc is not None else "–"}</td><td class="num">{_e(a.get("n", "–"))}</td>'
        f"<td>{_e(a.get('calibrated_at') or '–')}</td>"
    )


def _judges_html(run: RunData) -> str:
    judged = [m for m in run.metrics if m.judge is not None]
    if not judged:
        return ""
    head = "<tr><th>metric</th><th>judge model</th><th>kappa</th><th>accuracy</th><th>n</th><th>calibrated</th></tr>"
    rows = "".join(f"<tr><td>{_e(m.label)}</td><td>{_e(m.judge)}</td>{_agreement_cells(m)}</tr>" for m in judged)
    note = (
        f'<p class="meta">Agreement of each judge with human labels (Cohen\'s kappa, quadratic-weighted for '
        f"1–5 scores; below {TRUST_KAPPA} is fair agreement or worse).</p>"
    )
    return f"<h2>Judges</h2><table>{head}{rows}</table>{note}" + "".join(_judge_warnings(run))


def _img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{_e(alt)}">'


def _plots_html(run: RunData, cells: dict[tuple[str, str], Cell]) -> str:
    dists = "".join(_img(plot_distribution(run, m), f"{m.label} distribution") for m in run.metrics)
    return (
        "<h2>Means with 95% CI</h2>"
        + f'<div class="wide">{_img(plot_means(run, cells), "means")}</div>'
        + f'<h2>Score distributions</h2><div class="plots">{dists}</div>'
        + '<h2>Cost and latency</h2><div class="plots">'
        + _img(plot_cost_quality(run, cells), "cost vs quality")
        + _img(plot_latency(run), "latency")
        + "</div>"
    )


def worst_rows(run: RunData, metric: MetricInfo, n: int = WORST_N) -> list[ResultRow]:
    """The n worst-scoring rows for a metric: lowest values, or highest when lower is better."""
    scored = [r for r in run.rows if value(r, metric.label) is not None]
    sign = 1 if metric.higher_is_better else -1
    return sorted(scored, key=lambda r: (sign * value(r, metric.label), r.case_id, r.variant))[:n]


def _case_row(row: ResultRow, label: str) -> str:
    s = row.scores[label]
    score = f"{s.value:.3g}" + ("" if s.passed is None else f"<br>{_badge(s.passed)}")
    cells = [row.case_id, row.variant]
    texts = [s.reason or "", as_text(row.input), as_text(row.reference), row.output or ""]
    return (
        "<tr>"
        + "".join(f"<td>{_e(c)}</td>" for c in cells)
        + f'<td class="num">{score}</td>'
        + "".join(f"<td><pre>{_e(t)}</pre></td>" for t in texts)
        + "</tr>"
    )


def _worst_html(run: RunData) -> str:
    cols = (
        '<colgroup><col style="width:8%"><col style="width:11%"><col style="width:7%"><col style="width:17%">'
        '<col style="width:21%"><col style="width:14%"><col style="width:22%"></colgroup>'
    )
    head = (
        "<tr><th>case</th><th>variant</th><th>score</th><th>reason</th><th>input</th><th>reference</th>"
        "<th>output</th></tr>"
    )
    parts = ["<h2>Worst cases</h2>"]
    for m in run.metrics:
        rows = "".join(_case_row(r, m.label) for r in worst_rows(run, m))
        parts.append(
            f"<h3>{_e(m.label)}</h3>"
            + (f'<table class="cases">{cols}{head}{rows}</table>' if rows else '<p class="meta">No scored cases.</p>')
        )
    return "".join(parts)


def _error_items(run: RunData) -> Iterable[tuple[ResultRow, str, str]]:
    for r in run.rows:
        if r.error is not None:
            yield r, "model", r.error
        else:
            for label, s in r.scores.items():
                if s.error is not None:
                    yield r, label, s.error


def _errors_html(run: RunData, limit: int = 20) -> str:
    items = list(_error_items(run))
    if not items:
        return ""
    rows = "".join(
        f"<tr><td>{_e(r.case_id)}</td><td>{_e(r.variant)}</td><td>{_e(where)}</td><td><pre>{_e(msg)}</pre></td></tr>"
        for r, where, msg in items[:limit]
    )
    more = f'<p class="meta">…and {len(items) - limit} more.</p>' if len(items) > limit else ""
    head = "<tr><th>case</th><th>variant</th><th>failed</th><th>error</th></tr>"
    return f"<h2>Errors ({len(items)})</h2><table>{head}{rows}</table>{more}"


def render_html(run: RunData) -> str:
    """The whole report as a string (write_report saves it)."""
    cells = summarize(run)
    body = [_header_html(run), _summary_html(run, cells), _judges_html(run)]
    if run.rows and run.metrics:
        body += [_plots_html(run, cells), _worst_html(run)]
    body.append(_errors_html(run))
    return page(f"{run.suite} — {run.id}", body)


def write_report(run: RunData, path: Path) -> Path:
    """Write the self-contained HTML report for a run to `path` (parents created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(run), encoding="utf-8")
    return path


# --- terminal ------------------------------------------------------------------------------------------------------


def _metric_cells(c: Cell, m: MetricInfo) -> list[Text | str]:
    rate = "–" if c.pass_rate is None else f"{c.pass_rate:.0%} ({c.passed}/{c.judged})"
    return [
        m.label + ("" if m.higher_is_better else " ↓"),
        _fmt(c.mean),
        Text(_ci(c), style="dim"),
        Text(rate, style="" if c.pass_rate is None else "green" if c.passed == c.judged else "yellow"),
        Text(str(c.errors), style="red" if c.errors else "dim"),
    ]


def _variant_cells(variant: str, rows: list[ResultRow]) -> list[Text | str]:
    failed = sum(r.error is not None for r in rows)
    lat = _latencies(rows)
    name = Text(variant, style="bold")
    if failed:
        name.append(f"\n{failed} failed call{'s' * (failed > 1)}", style="red")
    return [name, f"{np.mean(lat):.0f} ms" if lat else "–", f"${sum(r.cost for r in rows):.4f}"]


def _judge_notes(run: RunData) -> list[str]:
    notes = []
    for m in run.metrics:
        if m.judge is None:
            continue
        if m.judge_agreement is None:
            notes.append(f"⚠ {m.label}: judge {m.judge} never calibrated: run `fmstack eval calibrate`")
        elif (k := _kappa(m)) is None or k < TRUST_KAPPA:
            notes.append(f"⚠ {m.label}: judge {m.judge} agrees poorly with humans (kappa {_fmt(k, 2)})")
    return notes


def render_summary(run: RunData, console: Console) -> None:
    """The tables printed at the end of a run: one per variant (its mean latency and total cost in the title), one
    row per metric (mean, 95% CI, pass rate, errors), so that it fits an 80-column terminal."""
    cells = summarize(run)
    console.print(f"[bold]{run.suite}[/] · run {run.id}", soft_wrap=True)
    for variant, rows in by_variant(run).items():
        name, latency, cost = _variant_cells(variant, rows)
        table = Table(title=f"{name} · latency {latency} · cost {cost}", title_justify="left")
        table.add_column("metric", no_wrap=True)
        for column in ("mean", "95% CI", "pass rate", "errors"):
            table.add_column(column, justify="right", no_wrap=True)
        for m in run.metrics:
            table.add_row(*_metric_cells(cells[(variant, m.label)], m))
        console.print(table)
    for note in _judge_notes(run):
        console.print(note, style="yellow", markup=False)
