"""The HTML report is self-contained and says what matters: per-variant CIs, judge trust, worst cases (escaped)."""

from __future__ import annotations

import base64
import math
import re
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from fmstack.app.eval.report import render_summary, summarize, worst_rows, write_report
from fmstack.app.eval.results import MetricInfo, MetricScore, ResultRow, RunData

N = 30
VARIANTS = [("qwen2.5-0.5b-instruct", "qa@v1"), ("smollm2-135m-instruct", "qa@v2")]
XSS = "<script>alert('pwned')</script>"
METRICS = [
    MetricInfo("exact≥1", "exact", threshold=1.0),
    MetricInfo("token_f1", "token_f1"),
    MetricInfo("helpfulness", "rubric", threshold=3, judge="qwen2.5-1.5b-instruct"),  # never calibrated
    MetricInfo(
        "faithfulness",
        "faithfulness",
        judge="qwen2.5-1.5b-instruct",
        judge_agreement={"kappa": 0.23, "accuracy": 0.61, "n": 40, "calibrated_at": "2026-11-20"},
    ),
    MetricInfo(
        "relevance",
        "relevance",
        judge="qwen2.5-7b-instruct",
        judge_agreement={"kappa": 0.81, "accuracy": 0.9, "n": 120, "calibrated_at": "2026-11-21"},
    ),
    MetricInfo("hallucination", "hallucination", higher_is_better=False),
]


def scores(rng: np.random.Generator, i: int, skill: float) -> dict[str, MetricScore]:
    exact = float(rng.random() < skill)
    help_ = int(np.clip(round(rng.normal(2 + 2 * skill, 1)), 1, 5))
    return {
        "exact≥1": MetricScore(exact, passed=exact >= 1, reason="matched" if exact else "no match"),
        "token_f1": MetricScore(float(np.clip(rng.normal(skill, 0.15), 0, 1))),
        "helpfulness": MetricScore(
            help_, passed=help_ >= 3, reason=f"the answer is {'clear' if help_ > 2 else 'vague'}"
        )
        if i != 7
        else MetricScore(None, error="judge returned no JSON"),
        "faithfulness": MetricScore(float(np.clip(rng.normal(0.8, 0.1), 0, 1))),
        "relevance": MetricScore(float(rng.integers(1, 6))),
        "hallucination": MetricScore(float(np.clip(rng.normal(1 - skill, 0.1), 0, 1))),
    }


def make_row(rng: np.random.Generator, i: int, model: str, prompt: str, skill: float) -> ResultRow:
    messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": f"Question {i}?"}]
    row = ResultRow(
        f"case-{i:02d}",
        model,
        prompt,
        messages,
        f"answer {i}",
        f"{model} answer {i}",
        None,
        latency_ms=float(rng.gamma(4, 60 / skill)),
        prompt_tokens=20,
        completion_tokens=12,
        cost=0.0 if "smollm2" in model else 0.0004,
        scores=scores(rng, i, skill),
    )
    if model.startswith("smollm2") and i in (3, 11):  # the model failed: no output, no scores
        row.output, row.error, row.scores = None, "timeout after 30s", {}
    return row


def make_run() -> RunData:
    rng = np.random.default_rng(0)
    rows = [make_row(rng, i, m, p, skill) for (m, p), skill in zip(VARIANTS, (0.8, 0.5), strict=True) for i in range(N)]
    bad = rows[-1]  # a prompt-injected output, scored worst on every metric
    bad.output = f"Sure! {XSS} & more"
    bad.input = [{"role": "user", "content": "<b>bold</b> question"}]
    bad.scores["token_f1"] = MetricScore(0.0, reason="reason with <img src=x onerror=alert(1)>")
    return RunData("run-7f3a", "capitals <qa>", "2026-11-22T09:30:00", METRICS, rows, config={})


@pytest.fixture(scope="module")
def run() -> RunData:
    return make_run()


@pytest.fixture(scope="module")
def html(run, tmp_path_factory) -> str:
    path = write_report(run, tmp_path_factory.mktemp("report") / "sub" / "report.html")
    assert path.exists()
    return path.read_text(encoding="utf-8")


def test_header(html):
    assert "capitals &lt;qa&gt;" in html and "run-7f3a" in html and "2026-11-22T09:30:00" in html
    for model, prompt in VARIANTS:
        assert model in html and prompt in html
    assert "cases pass every threshold" in html and 'class="badge fail"' in html


def test_every_variant_and_metric_in_the_summary(html):
    summary = html.split("<h2>Summary</h2>")[1].split("<h2>")[0]
    for model, prompt in VARIANTS:
        assert f"{model} · {prompt}" in summary
    for m in METRICS:
        assert m.label in summary
    assert "mean [95% CI]" in summary and "pass rate" in summary


def test_summary_numbers(run):
    cells = summarize(run)
    a = cells[("qwen2.5-0.5b-instruct · qa@v1", "exact≥1")]
    assert a.low <= a.mean <= a.high and a.n == N and a.judged == N and a.errors == 0
    b = cells[("smollm2-135m-instruct · qa@v2", "helpfulness")]
    assert b.errors == 3  # two model failures and one judge error
    assert b.n == N - 3
    values = [r.scores["exact≥1"].value for r in run.rows if r.variant == a.variant]
    assert a.mean == pytest.approx(np.mean(values)) and a.pass_rate == pytest.approx(np.mean(values))


def test_plots_are_embedded_pngs(html):
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(uris) == len(METRICS) + 3  # a distribution per metric, means, cost vs quality, latency
    assert all(base64.b64decode(u)[:8] == b"\x89PNG\r\n\x1a\n" for u in uris)


def test_no_external_assets(html):
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html and "<link" not in html and "@import" not in html
    assert re.findall(r'src="(?!data:image/png;base64,)', html) == []


def test_judge_section(html):
    judges = html.split("<h2>Judges</h2>")[1].split("<h2>")[0]
    for label in ("helpfulness", "faithfulness", "relevance"):
        assert label in judges
    assert "qwen2.5-1.5b-instruct" in judges and "qwen2.5-7b-instruct" in judges
    assert "judge never calibrated: run <code>fmstack eval calibrate</code>" in judges
    assert "low agreement" in judges and "kappa 0.23" in judges
    assert "relevance</b> (judge" not in judges  # kappa 0.81: no warning
    assert "2 judge metric(s) need attention" in html.split("<h2>")[0]  # also flagged at the top


def test_worst_cases_are_escaped(html):
    assert XSS not in html and "<img src=x" not in html and "<b>bold</b>" not in html
    worst = html.split("<h2>Worst cases</h2>")[1]
    assert html.count("&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt; &amp; more") >= 1
    assert "&lt;script&gt;" in worst and "&lt;img src=x onerror=alert(1)&gt;" in worst
    assert "user: &lt;b&gt;bold&lt;/b&gt; question" in worst and "answer 29" in worst


def test_worst_rows_follow_direction(run):
    f1 = worst_rows(run, run.metric("token_f1"))
    assert len(f1) == 5 and any(r.output.startswith("Sure!") for r in f1)
    values = [r.scores["token_f1"].value for r in f1]
    assert values == sorted(values)
    hall = [r.scores["hallucination"].value for r in worst_rows(run, run.metric("hallucination"))]
    assert hall == sorted(hall, reverse=True)  # lower is better: the worst are the highest
    assert all(r.scores["helpfulness"].value is not None for r in worst_rows(run, run.metric("helpfulness")))


def test_errors_listed(html):
    errors = html.split("<h2>Errors (4)</h2>")[1]  # two failed calls, a judge error in each variant
    assert "timeout after 30s" in errors and "judge returned no JSON" in errors


def test_degenerate_runs_do_not_crash(tmp_path):
    """A variant whose every call failed, a metric with no scores at all, and a run with no rows."""
    rows = [ResultRow(f"c{i}", "m", None, "q", None, None, "connection refused") for i in range(3)]
    rows += [ResultRow("c0", "n", None, "q", None, "ok", None, latency_ms=5, scores={"x": MetricScore(0.5)})]
    run = RunData("r", "s", "now", [MetricInfo("x", "x"), MetricInfo("y", "y")], rows)
    assert "data:image/png" in write_report(run, tmp_path / "a.html").read_text()
    empty = RunData("r", "s", "now", [MetricInfo("x", "x")], [])
    assert "Summary" in write_report(empty, tmp_path / "b.html").read_text()
    assert math.isnan(summarize(run)[("m", "x")].mean)


def test_render_summary(run):
    console = Console(record=True, width=220)
    render_summary(run, console)
    text = console.export_text()
    for model, prompt in VARIANTS:
        assert f"{model} · {prompt}" in text
    for m in METRICS:
        assert m.label in text
    assert "latency" in text and "cost $0.0120" in text
    assert "never calibrated" in text


def test_report_path_is_returned(tmp_path):
    small = RunData("r", "s", "now", [MetricInfo("x", "x")], [ResultRow("c", "m", None, "q", None, "a", None)])
    assert write_report(small, tmp_path / "r.html") == tmp_path / "r.html"
    assert isinstance(write_report(small, str(tmp_path / "s.html")), Path)


def test_ordinal_judge_is_judged_by_weighted_kappa(tmp_path):
    """Calibration of a 1–5 judge stores both kappas; the weighted one decides, as in `fmstack eval calibrate`."""
    agreement = {"kappa": 0.3, "kappa_quadratic": 0.75, "accuracy": 0.5, "n": 60}
    metric = MetricInfo("helpfulness", "rubric", judge="j", judge_agreement=agreement)
    rows = [
        ResultRow(f"c{i}", "m", None, "q", None, "a", None, scores={"helpfulness": MetricScore(i % 5 + 1)})
        for i in range(10)
    ]
    html = write_report(RunData("r", "s", "now", [metric], rows), tmp_path / "r.html").read_text()
    assert "0.75" in html and "low agreement" not in html


@pytest.mark.slow
def test_report_opens_in_a_real_browser(run, tmp_path, browser):
    path = write_report(run, tmp_path / "report.html")
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(path.as_uri())
    images = page.locator("img")
    assert images.count() >= 4
    widths = page.evaluate("Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
    assert all(w > 100 for w in widths), widths  # every embedded plot decodes
    assert run.suite in page.title() + page.inner_text("body")
    page.close()
    assert not errors
