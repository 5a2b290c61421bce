"""`fmstack eval …`: run suites, list and show runs, reports, comparisons, judge calibration, trace scoring."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Column, Table

from fmstack.cli.common import JSON, Col, command_group, console, print_json, show_rows, store
from fmstack.core.config import get_settings
from fmstack.core.errors import FmstackError

eval_app = command_group(
    "Evaluate models and prompts on suites of cases.\n\nExample: fmstack eval run examples/eval/capitals.yaml "
    "--model smollm2-135m-instruct",
    no_args_is_help=True,
)


class Workspace:
    """The store, the registry and models, opened once per command."""

    def __init__(self):
        from fmstack.gateway import Gateway

        self.gateway = Gateway.open(get_settings())
        self.settings, self.sessions = self.gateway.settings, self.gateway.sessions
        self.registry, self.pool = self.gateway.registry, self.gateway.pool

    def embed(self, texts: list[str]):
        return self.pool.embedding(self.settings.embedding_model).embed(texts, truncate=True)[0]

    def generator(self, base_url: str | None, api_key_env: str):
        from fmstack.app.eval.generate import LocalGenerator, RemoteGenerator

        if base_url:
            return RemoteGenerator(base_url, os.environ.get(api_key_env, "none"), self.registry)
        return LocalGenerator(self.gateway)

    def close(self) -> None:
        self.gateway.close()


def _progress(label: str) -> Progress:
    return Progress(
        label,
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


@eval_app.command("run")
def run(
    suite_path: Path = typer.Argument(..., help="The suite YAML file."),
    model: list[str] = typer.Option(None, "--model", "-m", help="Model to evaluate; repeat for several."),
    prompt: list[str] = typer.Option(
        None,
        "--prompt",
        help="A stored prompt version (NAME@2, NAME@production) that renders each case's vars in place of the "
        "suite's prompt; repeat to compare versions side by side.",
    ),
    judge: str = typer.Option(None, help="Judge model for AI-as-judge metrics (default: the suite's judge)."),
    base_url: str = typer.Option(None, help="Generate through any OpenAI-compatible URL instead of local engines."),
    api_key_env: str = typer.Option("OPENAI_API_KEY", help="Environment variable holding the API key for --base-url."),
    concurrency: int = typer.Option(4, min=1, help="Cases generated at once."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Generate again even when the output is cached."),
    report: Path = typer.Option(None, help="Also write the HTML report here."),
) -> None:
    """Run a suite: every case × model (× stored prompt version), scored by every metric; exits 1 if a threshold
    fails (a CI gate).

    Example: fmstack eval run examples/eval/capitals.yaml -m smollm2-135m-instruct -m qwen2.5-0.5b-instruct
    """
    from fmstack.app.eval.report import render_summary, write_report
    from fmstack.app.eval.runner import Runner, RunOptions, gate
    from fmstack.app.eval.suite import load_suite

    ws = Workspace()
    try:
        suite = load_suite(suite_path, ws.sessions, stored_prompts=bool(prompt))
        prompts = _stored_prompts(ws, prompt or [])
        prompt_models = list(dict.fromkeys(m for p in prompts if (m := p.params.get("model"))))
        models = model or suite.spec.models or prompt_models or [ws.settings.default_model]
        judge_model = judge or suite.spec.judge.get("model")
        for name in [*models, *([judge_model] if judge_model else [])]:
            if not base_url:
                ws.registry.get(name)
        with _progress(f"{suite.name}") as bar:
            task = bar.add_task("cases", total=None)
            runner = Runner(
                ws.sessions,
                ws.generator(base_url, api_key_env),
                ws.embed,
                lambda done, total: bar.update(task, completed=done, total=total),
            )
            options = RunOptions(models, concurrency, not no_cache, judge_model, prompts=prompts)
            data = asyncio.run(runner.run(suite, options))
    finally:
        ws.close()
    render_summary(data, console)
    cached = sum(r.cached for r in data.rows)
    console.print(f"run [cyan]{data.id}[/] · {len(data.rows)} results ({cached} from cache)", soft_wrap=True)
    if report:
        console.print(f"report: {write_report(data, report)}", soft_wrap=True)
    failures = gate(data, suite.spec.min_pass_rate)
    for failure in failures:
        console.print(f"[red]threshold failed:[/] {failure}", soft_wrap=True)
    if failures:
        raise typer.Exit(1)


def _stored_prompts(ws: Workspace, refs: list[str]) -> list:
    """The stored versions named by --prompt, each once, in the order given."""
    from fmstack.app.prompts import PromptStore

    store = PromptStore(ws.sessions)
    found = {}
    for ref in refs:
        version = store.get(ref)
        found.setdefault(version.label, version)
    return list(found.values())


RUN_COLUMNS = (
    Col("run", lambda r: r.id, no_wrap=True),
    Col("time", lambda r: r.created_at.strftime("%Y-%m-%d %H:%M")),
    Col("suite", lambda r: r.suite),
    Col("models", lambda r: ", ".join(r.models + r.prompts)),
    Col("results", lambda r: str(r.results)),
    Col("status", lambda r: r.status),
)


@eval_app.command("list")
def list_runs(
    limit: int = typer.Option(20, help="How many, newest first."),
    as_json: bool = JSON,
) -> None:
    """List eval runs.

    Example: fmstack eval list --limit 10
    """
    from fmstack.app.eval.runner import list_runs as stored_runs

    show_rows(stored_runs(store(), limit), RUN_COLUMNS, as_json)


@eval_app.command("show")
def show(
    run_id: str = typer.Argument(..., help="The run id (see `fmstack eval list`)."),
    as_json: bool = typer.Option(False, "--json", help="Print the run as JSON: summary, metrics and every result."),
) -> None:
    """Show a run's summary table and its failed cases.

    Example: fmstack eval show run-0123456789ab
    """
    from fmstack.app.eval.report import render_summary, run_dict
    from fmstack.app.eval.runner import load_run

    data = load_run(store(), run_id)
    if as_json:
        print_json(run_dict(data))
        return
    render_summary(data, console)
    for row in data.rows:
        if row.error:
            console.print(f"[red]{row.variant} · {row.case_id}:[/] {row.error}", soft_wrap=True)


@eval_app.command("report")
def report(
    run_id: str = typer.Argument(..., help="The run id."),
    output: Path = typer.Option(None, "--output", "-o", help="HTML file to write (default: RUN.html)."),
) -> None:
    """Write one self-contained HTML report with plots, confidence intervals and the worst cases.

    Example: fmstack eval report run-0123456789ab -o report.html
    """
    from fmstack.app.eval.report import write_report
    from fmstack.app.eval.runner import load_run

    data = load_run(store(), run_id)
    console.print(f"wrote {write_report(data, output or Path(f'{run_id}.html'))}", soft_wrap=True)


@eval_app.command("compare")
def compare(
    run_a: str = typer.Argument(..., help="The baseline run."),
    run_b: str = typer.Argument(None, help="The run to compare with it (default: RUN_A, with --a and --b)."),
    variant_a: str = typer.Option(None, "--a", help="Only this variant of run a: a model, a prompt (name@2) or both."),
    variant_b: str = typer.Option(None, "--b", help="Only this variant of run b."),
) -> None:
    """Per-metric deltas with paired bootstrap confidence intervals, and the cases that flipped. Two variants of
    one run (prompt versions run side by side with --prompt) compare with --a and --b.

    Example: fmstack eval compare run-aaaaaaaaaaaa run-bbbbbbbbbbbb  (or: RUN --a capitals@1 --b capitals@2)
    """
    from fmstack.app.eval.compare import compare_runs, render_comparison
    from fmstack.app.eval.runner import load_run

    sessions = store()
    a, b = load_run(sessions, run_a), load_run(sessions, run_b or run_a)
    a, b = _only_variant(a, variant_a), _only_variant(b, variant_b)
    if run_b is None and not (variant_a and variant_b):
        raise FmstackError("Give a second run, or two variants of this one with --a and --b.")
    render_comparison(compare_runs(a, b), console)


def _only_variant(run, wanted: str | None):
    """The run with the rows of one variant: named in full ("model · name@2"), or by its model or prompt alone."""
    from dataclasses import replace

    if not wanted:
        return run
    matches = [v for v in run.variants if wanted in (v, *v.split(" · "))]
    if len(matches) != 1:
        how = "matches several" if matches else "matches none"
        raise FmstackError(f"'{wanted}' {how} of the variants of {run.id}: {'; '.join(run.variants)}.")
    return replace(run, rows=[r for r in run.rows if r.variant == matches[0]])


METRIC_COLUMNS = (
    Col("metric", lambda m: m["name"], no_wrap=True),
    Col("needs", lambda m: ", ".join(m["needs"]) or "-"),
    Col("what it measures", lambda m: m["description"]),
)


@eval_app.command("metrics")
def metrics(as_json: bool = JSON) -> None:
    """List the metrics suites can use, with what each needs.

    Example: fmstack eval metrics
    """
    from fmstack.app.eval.metrics import metric_classes

    rows = [
        {"name": name, "needs": sorted(cls.requires), "description": (cls.__doc__ or "").strip().partition("\n")[0]}
        for name, cls in sorted(metric_classes().items())
    ]
    show_rows(rows, METRIC_COLUMNS, as_json)


@eval_app.command("calibrate")
def calibrate(
    judge: str = typer.Option(..., help="The judge model to measure."),
    metric: str = typer.Option("correctness", help="The judge metric: correctness, rubric, faithfulness…"),
    labels: Path = typer.Option(None, help="JSONL of {question, answer, label[, reference, context]}."),
    from_feedback: bool = typer.Option(False, "--from-feedback", help="Use rated traces as the human labels."),
    pass_score: float = typer.Option(4, help="Rubric score that counts as 'good' against pass/fail labels."),
) -> None:
    """Measure a judge against human labels: accuracy, Cohen's kappa, confusion matrix.

    Example: fmstack eval calibrate --judge qwen2.5-0.5b-instruct --metric correctness --labels labels.jsonl
    """
    from fmstack.app.eval.calibrate import render_agreement
    from fmstack.app.eval.scoring import calibrate_judge, labelled_from_feedback, read_labelled

    if (labels is None) == (not from_feedback):
        raise FmstackError("Give exactly one of --labels FILE or --from-feedback.")
    ws = Workspace()
    try:
        ws.registry.get(judge)
        items = read_labelled(labels) if labels else labelled_from_feedback(ws.sessions)
        with console.status(f"judging {len(items)} labelled answers with {judge}"):
            result = calibrate_judge(
                ws.sessions, ws.generator(None, ""), ws.embed, _metric(metric), judge, items, pass_score
            )
    finally:
        ws.close()
    render_agreement(result, console)


@eval_app.command("score")
def score(
    traces: bool = typer.Option(False, "--traces", help="Score stored traces (required: the only source so far)."),
    metric: list[str] = typer.Option(..., "--metric", help="Metric to score with; repeat for several."),
    judge: str = typer.Option(None, help="Judge model for AI-as-judge metrics."),
    model: str = typer.Option(None, help="Only traces of this model."),
    app_name: str = typer.Option(None, "--app", help="Only traces of this app."),
    since: str = typer.Option(None, help="Only traces since this ISO time, e.g. 2026-11-01."),
    limit: int = typer.Option(100, help="At most this many traces, newest first."),
) -> None:
    """Score stored production traces without generating again; scores attach to the traces.

    Example: fmstack eval score --traces --app shop-bot --metric answer_relevance --metric rubric --judge
    qwen2.5-0.5b-instruct
    """
    from datetime import datetime

    from fmstack.app.eval.scoring import score_traces

    if not traces:
        raise FmstackError("Say what to score: --traces.")
    metrics = [_metric(m) for m in metric]
    try:
        when = datetime.fromisoformat(since) if since else None
    except ValueError as exc:
        raise FmstackError(f"--since: {exc}") from None
    ws = Workspace()
    try:
        with console.status("scoring traces"):
            scored = score_traces(
                ws.sessions,
                ws.generator(None, ""),
                ws.embed,
                metrics,
                judge,
                model=model,
                app=app_name,
                since=when,
                limit=limit,
            )
    finally:
        ws.close()
    table = Table(Column("trace", no_wrap=True), *[m.name for m in metrics])
    for trace_id, scores in scored:
        table.add_row(trace_id, *[f"{s.value:.2f}" if s.value is not None else f"[red]{s.error}[/]" for s in scores])
    console.print(table)


def _metric(name: str):
    from pydantic import ValidationError

    from fmstack.app.eval.metrics import get_metric, metric_names

    try:
        return get_metric(name)
    except KeyError:
        raise FmstackError(f"Unknown metric '{name}'. Known: {', '.join(metric_names())}.") from None
    except ValidationError as exc:
        raise FmstackError(
            f"Metric '{name}' needs parameters ({exc.errors()[0]['loc'][0]}); use it in a suite file instead."
        ) from None
