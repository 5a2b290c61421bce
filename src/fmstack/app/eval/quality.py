"""Which variant of a model to serve: task scores with their noise, beside what each variant costs.

`fmstack model compare` measures speed, memory, perplexity and divergence in the model layer and the task score
here, on an eval suite, through the same runner as `fmstack eval run`; this module then puts the two together. The
model layer's figures arrive as plain dicts (`VariantResult.measured`), since `app` does not import `model`.

The task score of each variant is the mean of one metric over the suite's cases with a bootstrap 95 % CI, and its
difference to the reference (the highest-precision variant) is a *paired* bootstrap over the same cases: the
question is whether quantization changed the answers, not how hard the suite is. The verdict is the smallest file
whose score is not significantly worse than the reference's — "not significantly worse" on a few dozen cases is
weak evidence, so the report shows every interval and says which differences are within noise.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from fmstack.app.eval.report import value
from fmstack.app.eval.results import RunData
from fmstack.app.eval.runner import Runner, RunOptions
from fmstack.app.eval.stats import bootstrap_mean_ci, paired_bootstrap_delta
from fmstack.app.eval.suite import Suite, metric_label
from fmstack.core.errors import InvalidRequest
from fmstack.core.htmlpage import page, png_uri


@dataclass
class TaskScore:
    """One variant's score on the suite, and its paired difference to the reference (None for the reference)."""

    metric: str
    higher_is_better: bool
    mean: float
    low: float
    high: float
    n: int
    errors: int = 0  # cases without a score: the model failed, or the metric could not score
    delta: float | None = None
    delta_low: float | None = None
    delta_high: float | None = None

    @property
    def significantly_worse(self) -> bool:
        """The 95 % CI of the paired difference lies entirely on the bad side of zero."""
        if self.delta_low is None or self.delta_high is None or math.isnan(self.delta_low):
            return False
        return self.delta_high < 0 if self.higher_is_better else self.delta_low > 0

    @property
    def within_noise(self) -> bool:
        """The paired difference's 95 % CI includes zero (the reference itself counts as within noise)."""
        if self.delta_low is None or self.delta_high is None or math.isnan(self.delta_low):
            return True
        return self.delta_low <= 0 <= self.delta_high


@dataclass
class VariantResult:
    name: str
    measured: dict[str, Any]  # fmstack.model.export.measure.Measurement, as a dict
    task: TaskScore
    seconds_per_1k: float | None = None  # machine time for 1,000 of the suite's requests, one stream at a time
    cost_per_1k: float | None = None  # that time at the given price per machine hour


@dataclass
class QualityReport:
    suite: str
    metric: str
    reference: str
    eval_run: str
    variants: list[VariantResult]
    verdict: str | None  # the smallest variant whose task score is not significantly worse
    verdict_reason: str

    def to_dict(self) -> dict[str, Any]:
        rows = [
            {"name": v.name, **v.measured, "task": asdict(v.task) | _task_flags(v.task),
             "seconds_per_1k_requests": v.seconds_per_1k, "cost_per_1k_requests": v.cost_per_1k}
            for v in self.variants
        ]  # fmt: skip
        head = {k: getattr(self, k) for k in ("suite", "metric", "reference", "eval_run", "verdict", "verdict_reason")}
        return head | {"variants": rows}


def _task_flags(task: TaskScore) -> dict[str, bool]:
    return {"significantly_worse": task.significantly_worse, "within_noise": task.within_noise}


def pick_metric(suite: Suite, label: str | None) -> tuple[str, bool]:
    """The metric whose mean is the task score (default: the suite's first), and whether higher is better."""
    metrics = {metric_label(m): m for m in suite.metrics}
    if not metrics:
        raise InvalidRequest(f"suite '{suite.name}' has no metrics; a task score needs one.")
    chosen = label or next(iter(metrics))
    if chosen not in metrics:
        raise InvalidRequest(f"--metric {chosen!r} is not in suite '{suite.name}'; it has {', '.join(metrics)}.")
    return chosen, metrics[chosen].higher_is_better


async def run_suite(runner: Runner, suite: Suite, models: list[str], concurrency: int = 8) -> RunData:
    """Every case on every variant, generated afresh: a cached answer would belong to an earlier file that was
    registered under the same name. Cases run `concurrency` at a time so each engine batches them; no speed is read
    from this run (the costs come from the measurements), so batching only saves time."""
    return await runner.run(suite, RunOptions(models, concurrency, use_cache=False))


def task_scores(run: RunData, models: list[str], reference: str, metric: str, higher: bool) -> dict[str, TaskScore]:
    """Mean and CI per variant; paired difference to the reference over the cases both scored."""
    per_model = {m: {r.case_id: value(r, metric) for r in run.rows if r.model == m} for m in models}
    scores = {}
    for model, values in per_model.items():
        mean, low, high = bootstrap_mean_ci(values.values())
        n = sum(v is not None for v in values.values())
        score = TaskScore(metric, higher, mean, low, high, n, len(values) - n)
        if model != reference:
            score.delta, score.delta_low, score.delta_high = paired_bootstrap_delta(per_model[reference], values)
        scores[model] = score
    return scores


def verdict(variants: list[VariantResult], reference: str) -> tuple[str | None, str]:
    """The smallest file that is not significantly worse than the reference on the task, and why."""
    fine = [v for v in variants if not v.task.significantly_worse and v.task.n > 0]
    if not fine:
        return None, "no variant has a task score (every case failed)"
    best = min(fine, key=lambda v: v.measured["size_bytes"])
    worse = [v.name for v in variants if v.task.significantly_worse]
    ref = next(v for v in variants if v.name == reference)
    reason = (
        f"the smallest file ({best.measured['size_bytes'] / 1e6:,.3g} MB, "
        f"{best.measured['size_bytes'] / ref.measured['size_bytes']:.0%} of {reference}) whose {best.task.metric} "
        "is not significantly worse than the reference's (paired bootstrap, 95 %)"
    )
    if worse:
        reason += f"; significantly worse: {', '.join(worse)}"
    return best.name, reason


def build_report(
    suite: str, run: RunData, measured: list[dict[str, Any]], metric: str, higher: bool, price: float | None = None
) -> QualityReport:
    """Measurements (from the model layer) and the suite run, as one report with its verdict; `price` is USD per
    machine hour, for the cost of 1,000 requests."""
    names = [m["name"] for m in measured]
    reference = measured[0]["reference"]
    scores = task_scores(run, names, reference, metric, higher)
    variants = []
    for m in measured:
        seconds = seconds_per_1k(run, m)
        cost = seconds / 3600 * price if price is not None and seconds is not None else None
        variants.append(VariantResult(m["name"], {k: v for k, v in m.items() if k != "name"}, scores[m["name"]],
                                      seconds, cost))  # fmt: skip
    choice, reason = verdict(variants, reference)
    return QualityReport(suite, metric, reference, run.id, variants, choice, reason)


def seconds_per_1k(run: RunData, measured: dict[str, Any]) -> float | None:
    """Machine seconds for 1,000 requests like the suite's: its mean prompt and answer lengths on this variant at
    the measured one-stream prefill and decode speeds (the eval run's own latencies are not used: its cases ran
    concurrently, beside the other variants)."""
    rows = [r for r in run.rows if r.model == measured["name"] and r.error is None]
    if not rows or not measured["prefill_tokens_per_s"] or not measured["decode_tokens_per_s"]:
        return None
    prompt = sum(r.prompt_tokens for r in rows) / len(rows)
    answer = sum(r.completion_tokens for r in rows) / len(rows)
    per_request = prompt / measured["prefill_tokens_per_s"] + answer / measured["decode_tokens_per_s"]
    return round(1000 * per_request, 1)


def noise_note(report: QualityReport) -> str:
    """One sentence on which differences to the reference are within noise."""
    others = [v for v in report.variants if v.name != report.reference]
    noisy = [v.name for v in others if v.task.within_noise]
    if not others:
        return ""
    if len(noisy) == len(others):
        return f"Every difference in {report.metric} to {report.reference} is within noise (95 % CI includes 0)."
    if not noisy:
        return f"Every difference in {report.metric} to {report.reference} is outside noise."
    return f"Within noise (95 % CI of the difference includes 0): {', '.join(noisy)}."


# ---------------------------------------------------------------- report files


def write_report(report: QualityReport, out: Path) -> dict[str, Path]:
    """compare.json, compare.html (table, plot, verdict) and compare.png in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "compare.json", "html": out / "compare.html", "plot": out / "compare.png"}
    figure = plot(report)
    figure.savefig(paths["plot"], dpi=110)
    paths["json"].write_text(json.dumps(report.to_dict(), indent=1) + "\n")
    paths["html"].write_text(render_html(report, png_uri(figure)))
    return paths


def plot(report: QualityReport) -> Figure:
    """Task score (with its 95 % CI) against decode tokens/s; bubble area proportional to file size."""
    fig = Figure(figsize=(7.5, 4.8), layout="constrained")
    ax = fig.subplots()
    largest = max(v.measured["size_bytes"] for v in report.variants)
    for i, v in enumerate(report.variants):
        x, t = v.measured["decode_tokens_per_s"], v.task
        colour = "#c44e52" if t.significantly_worse else ("#4c72b0" if v.name != report.verdict else "#55a868")
        ax.scatter([x], [t.mean], s=1500 * v.measured["size_bytes"] / largest, alpha=0.45, color=colour)
        ax.errorbar([x], [t.mean], yerr=[[t.mean - t.low], [t.high - t.mean]], color=colour, capsize=3, lw=1)
        ax.annotate(f"{v.name}\n{v.measured['size_bytes'] / 1e6:,.3g} MB", (x, t.mean), fontsize=8,
                    xytext=(6, 6 if i % 2 else -20), textcoords="offset points")  # fmt: skip
    ax.set_xlabel("decode tokens/s (1 stream)")
    ax.set_ylabel(f"{report.metric} (mean, 95 % CI)")
    ax.set_title(f"{report.suite}: quality against speed (bubble area = file size)", fontsize=10)
    ax.grid(alpha=0.3)
    return fig


COST_COLUMNS = (  # (header, how a variant reads in it): what serving it costs
    ("variant", lambda v: v.name),
    ("size MB", lambda v: f"{v.measured['size_bytes'] / 1e6:,.1f}"),
    ("bits/w", lambda v: f"{v.measured['bits_per_weight']:.2f}"),
    ("load s", lambda v: f"{v.measured['load_s']:.2f}"),
    ("peak RSS MB", lambda v: f"{v.measured['peak_rss_mb']:,.0f}"),
    ("prefill tok/s", lambda v: f"{v.measured['prefill_tokens_per_s']:,.0f}"),
    ("decode tok/s", lambda v: f"{v.measured['decode_tokens_per_s']:.1f}"),
    ("N streams tok/s", lambda v: f"{v.measured['streams_tokens_per_s']:.1f}"),
    ("s / 1k req", lambda v: _num(v.seconds_per_1k, 0)),
    ("$ / 1k req", lambda v: _num(v.cost_per_1k, 4)),
)
QUALITY_COLUMNS = (  # and what it loses
    ("variant", lambda v: v.name),
    ("perplexity", lambda v: _num(v.measured.get("perplexity"), 2)),
    ("mean KL", lambda v: _sig(v.measured.get("kl_mean"))),
    ("top-1 agree", lambda v: _pct(v.measured.get("top1_agreement"))),
    ("task score [95 % CI]", lambda v: f"{v.task.mean:.3f} [{v.task.low:.3f}, {v.task.high:.3f}]"),
    ("Δ vs reference [95 % CI]", lambda v: _delta(v.task)),
)
COLUMNS = COST_COLUMNS + QUALITY_COLUMNS[1:]


def _num(x: float | None, digits: int) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _sig(x: float | None) -> str:
    """Three significant digits: KL divergences run from 1e-5 (q8_0) to 1 (a 2-bit file)."""
    return "–" if x is None else f"{x:.3g}"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.1%}"


def _delta(t: TaskScore) -> str:
    if t.delta is None:
        return "reference"
    mark = " worse" if t.significantly_worse else (" (noise)" if t.within_noise else " better")
    return f"{t.delta:+.3f} [{t.delta_low:+.3f}, {t.delta_high:+.3f}]{mark}"


def render_html(report: QualityReport, plot_uri: str) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h, _ in COLUMNS)
    rows = "".join("<tr>" + "".join(f"<td>{e(cell(v))}</td>" for _, cell in COLUMNS) + "</tr>" for v in report.variants)
    streams = report.variants[0].measured["streams"]
    body = [
        f"<h1>Model variants on {e(report.suite)}</h1>",
        f"<p class='meta'>task score: <b>{e(report.metric)}</b> · differences to: "
        f"<b>{e(report.reference)}</b> · eval run <code>{e(report.eval_run)}</code> · N streams = {streams}</p>",
        f"<div class='warn'><b>Verdict: {e(report.verdict or 'none')}</b> — {e(report.verdict_reason)}. "
        f"{e(noise_note(report))}</div>",
        f"<table><tr>{head}</tr>{rows}</table>",
        f"<div class='wide'><img src='{plot_uri}' alt='task score against decode speed'></div>",
        "<p class='meta'>Speed and memory: each variant alone in its own process, served by the llamacpp engine. "
        "Perplexity, KL and top-1 agreement: the same held-out tokens, KL(reference ‖ variant) per token.</p>",
    ]
    return page(f"compare: {report.suite}", body)
