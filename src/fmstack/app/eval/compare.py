"""Compare two runs of a suite: did the change (a new prompt, another model) help, and which cases moved?

A difference in means says little on 30 cases; the paired bootstrap CI says whether it is more than noise.
The flipped cases (pass→fail, fail→pass) are what a reviewer actually reads, so both outputs are kept with them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table
from rich.text import Text

from fmstack.app.eval.results import MetricInfo, ResultRow, RunData
from fmstack.app.eval.stats import paired_bootstrap_delta

Key = tuple[str, str]  # (case_id, variant) — or (case_id, "") when pairing by case alone


@dataclass
class MetricDelta:
    """One metric's change from run a to run b, over the cases both runs scored."""

    label: str
    higher_is_better: bool
    mean_a: float  # over the paired cases only, so that mean_b − mean_a == delta
    mean_b: float
    delta: float
    low: float
    high: float
    n: int  # paired cases with a value in both runs
    variant: str | None = None  # None: all paired variants pooled

    @property
    def significant(self) -> bool:
        """The 95% CI excludes zero: unlikely to be noise from which cases happen to be in the suite."""
        return self.n > 1 and (self.low > 0 or self.high < 0)

    @property
    def improved(self) -> bool | None:
        """Whether the change goes the metric's good way (None when there is no change or no data)."""
        if math.isnan(self.delta) or self.delta == 0:
            return None
        return (self.delta > 0) == self.higher_is_better


@dataclass
class Flip:
    """A case whose pass/fail verdict changed between the runs."""

    metric: str
    case_id: str
    variant: str
    regression: bool  # True: pass→fail; False: fail→pass
    value_a: float | None
    value_b: float | None
    output_a: str | None
    output_b: str | None
    reason_b: str | None = None

    @property
    def direction(self) -> str:
        return "pass→fail" if self.regression else "fail→pass"


@dataclass
class Comparison:
    run_a: str
    run_b: str
    by_case_only: bool  # the runs had one different variant each (model A vs model B): paired by case id
    variants_a: list[str]
    variants_b: list[str]
    deltas: list[MetricDelta]
    flipped: list[Flip]
    n_paired: int
    only_a: int  # rows of a with no counterpart in b (and vice versa): not part of any delta
    only_b: int
    metrics: list[MetricInfo] = field(default_factory=list)


def _pair_by_case_only(a: RunData, b: RunData) -> bool:
    va, vb = a.variants, b.variants
    return len(va) == 1 and len(vb) == 1 and va != vb


def _index(run: RunData, by_case_only: bool) -> dict[Key, ResultRow]:
    """Rows by pairing key; the first row wins if a key repeats (it should not in a well-formed run)."""
    index: dict[Key, ResultRow] = {}
    for row in run.rows:
        index.setdefault((row.case_id, "" if by_case_only else row.variant), row)
    return index


def _value(row: ResultRow, label: str) -> float | None:
    score = row.scores.get(label)
    if score is None or score.value is None or score.error is not None:
        return None
    return None if math.isnan(score.value) else float(score.value)


def _metric_delta(label: str, info: MetricInfo, pairs: list[tuple[ResultRow, ResultRow]], variant: str | None):
    a = {i: _value(ra, label) for i, (ra, _) in enumerate(pairs)}
    b = {i: _value(rb, label) for i, (_, rb) in enumerate(pairs)}
    both = [i for i in a if a[i] is not None and b[i] is not None]
    delta, low, high = paired_bootstrap_delta(a, b)
    mean_a = sum(a[i] for i in both) / len(both) if both else math.nan
    mean_b = sum(b[i] for i in both) / len(both) if both else math.nan
    return MetricDelta(label, info.higher_is_better, mean_a, mean_b, delta, low, high, len(both), variant)


def _flips(label: str, key: Key, row_a: ResultRow, row_b: ResultRow) -> Flip | None:
    sa, sb = row_a.scores.get(label), row_b.scores.get(label)
    if sa is None or sb is None or sa.passed is None or sb.passed is None or sa.passed == sb.passed:
        return None
    variant = key[1] or f"{row_a.variant} → {row_b.variant}"
    return Flip(label, key[0], variant, sa.passed, sa.value, sb.value, row_a.output, row_b.output, sb.reason)


def _shared_metrics(a: RunData, b: RunData) -> list[MetricInfo]:
    labels_b = {m.label for m in b.metrics}
    return [m for m in a.metrics if m.label in labels_b]


def _deltas(metrics: list[MetricInfo], pairs: dict[Key, tuple[ResultRow, ResultRow]]) -> list[MetricDelta]:
    """One pooled delta per metric, then one per variant when several variants were paired."""
    variants = list(dict.fromkeys(k[1] for k in pairs))
    out = [_metric_delta(m.label, m, list(pairs.values()), None) for m in metrics]
    if len(variants) > 1:
        for v in variants:
            sub = [p for k, p in pairs.items() if k[1] == v]
            out += [_metric_delta(m.label, m, sub, v) for m in metrics]
    return out


def compare_runs(a: RunData, b: RunData) -> Comparison:
    """Pair the rows of two runs by (case, variant) — or by case alone when each run has one, different, variant —
    and measure each shared metric's change (b − a) with a paired bootstrap 95% CI, plus the flipped cases."""
    by_case = _pair_by_case_only(a, b)
    ia, ib = _index(a, by_case), _index(b, by_case)
    pairs = {k: (ia[k], ib[k]) for k in ia if k in ib}
    metrics = _shared_metrics(a, b)
    flips = [f for m in metrics for k, (ra, rb) in pairs.items() if (f := _flips(m.label, k, ra, rb))]
    flips.sort(key=lambda f: (not f.regression, f.metric, f.case_id))
    return Comparison(
        run_a=a.id,
        run_b=b.id,
        by_case_only=by_case,
        variants_a=a.variants,
        variants_b=b.variants,
        deltas=_deltas(metrics, pairs),
        flipped=flips,
        n_paired=len(pairs),
        only_a=len(ia) - len(pairs),
        only_b=len(ib) - len(pairs),
        metrics=metrics,
    )


# --- terminal rendering ---------------------------------------------------------------------------------------


def _fmt(x: float, signed: bool = False) -> str:
    if math.isnan(x):
        return "–"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def _delta_style(d: MetricDelta) -> str:
    """Green for a change in the metric's good direction, red for the bad one; bold when the CI excludes zero."""
    colour = {True: "green", False: "red", None: "dim"}[d.improved]
    return f"bold {colour}" if d.significant and d.improved is not None else colour


def _delta_table(c: Comparison) -> Table:
    per_variant = any(d.variant for d in c.deltas)
    table = Table(title=f"{c.run_a} → {c.run_b}  (b − a, paired bootstrap 95% CI)", title_justify="left")
    table.add_column("metric")
    if per_variant:
        table.add_column("variant")
    for name in ("a", "b", "Δ", "95% CI", "n"):
        table.add_column(name, justify="right")
    table.add_column("significant")
    for i, d in enumerate(c.deltas):
        style = _delta_style(d)
        cells = [d.label + ("" if d.higher_is_better else " ↓")]
        if per_variant:
            cells.append(d.variant or "all")
        ci = f"[{_fmt(d.low, True)}, {_fmt(d.high, True)}]"
        cells += [_fmt(d.mean_a), _fmt(d.mean_b), Text(_fmt(d.delta, True), style=style), Text(ci, style=style)]
        cells += [str(d.n), Text("yes", style=style) if d.significant else Text("no", style="dim")]
        last_pooled = d.variant is None and i + 1 < len(c.deltas) and c.deltas[i + 1].variant is not None
        table.add_row(*cells, end_section=last_pooled)
    return table


def _short(text: str | None, limit: int = 80) -> str:
    if text is None:
        return "(no output)"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _flip_table(c: Comparison, limit: int) -> Table:
    shown = f", first {limit}" if len(c.flipped) > limit else ""
    table = Table(title=f"Flipped cases ({len(c.flipped)}{shown})", title_justify="left", show_lines=True)
    for name in ("metric", "case", "variant", "change", "a", "b", "output a", "output b"):
        table.add_column(name, overflow="fold")
    for f in c.flipped[:limit]:
        change = Text(f.direction, style="red" if f.regression else "green")
        va = "–" if f.value_a is None else f"{f.value_a:g}"
        vb = "–" if f.value_b is None else f"{f.value_b:g}"
        table.add_row(f.metric, f.case_id, f.variant, change, va, vb, _short(f.output_a), _short(f.output_b))
    return table


def render_comparison(comparison: Comparison, console: Console, max_flips: int = 50) -> None:
    """Print the metric deltas, then the flipped cases (regressions first, at most `max_flips`: the full list is in
    `comparison.flipped`)."""
    c = comparison
    how = "by case (one variant each)" if c.by_case_only else "by case and variant"
    console.print(f"Paired {c.n_paired} rows {how}; unpaired: {c.only_a} only in a, {c.only_b} only in b.")
    if c.by_case_only:
        console.print(f"a = {c.variants_a[0]}, b = {c.variants_b[0]}")
    console.print(_delta_table(c))
    if c.flipped:
        console.print(_flip_table(c, max_flips))
    else:
        console.print("No case changed between pass and fail.")
