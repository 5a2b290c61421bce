"""Running a suite: every case × model, concurrently, with cached outputs, scored by every metric, stored.

A model error on one case is that case's error; the run goes on. Outputs (and judge verdicts) are cached by
(model, prompt, parameters, input, sample), so re-running an unchanged suite generates nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from fmstack.app.eval.generate import Generated, Generator
from fmstack.app.eval.metrics import Case, Metric, MetricContext, Output, Score
from fmstack.app.eval.metrics.judge import Pairwise
from fmstack.app.eval.results import MetricInfo, MetricScore, ResultRow, RunData, RunSummary
from fmstack.app.eval.suite import Suite, metric_label
from fmstack.core.errors import FmstackError
from fmstack.core.store.schema import EvalCache, EvalResult, EvalRun, JudgeCalibration, utcnow
from fmstack.gateway.params import GENERATION_PARAMS

DEFAULT_PARAMS = {"temperature": 0.0, "max_tokens": 256}
JUDGE_PARAMS = {"temperature": 0.0, "max_tokens": 300}


class PromptVariant(Protocol):
    """A stored prompt version (`fmstack.app.prompts.StoredPrompt`): renders a case's variables to messages."""

    label: str  # "name@version": the variant's prompt, in tables, reports and the output cache key

    @property
    def params(self) -> dict[str, Any]: ...

    def render(self, variables: dict[str, Any] | None = None) -> list[dict[str, str]]: ...


@dataclass
class RunOptions:
    models: list[str]
    concurrency: int = 4
    use_cache: bool = True
    judge_model: str | None = None
    prompt: str | None = None  # a prompt version label, when the suite is run through versioned prompts
    # stored prompt versions: each renders every case's `vars` (in place of the suite's prompt), so the run has
    # one variant per model × prompt version
    prompts: list[PromptVariant] = field(default_factory=list)


class OutputCache:
    """Generated text by a hash of everything that determines it, in the store (shared by all runs)."""

    def __init__(self, sessions: sessionmaker, enabled: bool):
        self.sessions = sessions
        self.enabled = enabled

    @staticmethod
    def key(**parts) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()

    async def get_or_generate(self, key: str, model: str, make) -> tuple[Generated, bool]:
        if (hit := await asyncio.to_thread(self.get, key)) is not None:
            return hit, True
        generated = await make()
        await asyncio.to_thread(self.put, key, model, generated)
        return generated, False

    def get(self, key: str) -> Generated | None:
        if not self.enabled:
            return None
        with self.sessions() as s:
            row = s.get(EvalCache, key)
            return Generated(**row.output) if row else None

    def put(self, key: str, model: str, generated: Generated) -> None:
        """Remember an output; losing a race with an identical case's write is fine (same key, same input)."""
        try:
            with self.sessions.begin() as s:
                s.merge(EvalCache(key=key, model=model, output=asdict(generated)))
        except IntegrityError:
            pass


class Runner:
    def __init__(
        self,
        sessions: sessionmaker,
        generator: Generator,
        embed: Callable | None = None,
        progress: Callable[[int, int], None] | None = None,
    ):
        self.sessions = sessions
        self.generator = generator
        self.embed = embed
        self.progress = progress or (lambda done, total: None)
        self._scoring: ThreadPoolExecutor | None = None  # the running suite's metric threads

    async def run(self, suite: Suite, options: RunOptions) -> RunData:
        cache = OutputCache(self.sessions, options.use_cache)
        params = DEFAULT_PARAMS | {k: v for k, v in suite.spec.params.items() if k in GENERATION_PARAMS}
        judge_model = options.judge_model or suite.spec.judge.get("model")
        run_id = f"run-{uuid.uuid4().hex[:12]}"
        ctx = MetricContext(self.embed, make_judge(cache, self.generator, judge_model, run_id), judge_model)
        infos = [self._info(m, judge_model) for m in suite.metrics]
        config = {
            "models": options.models,
            "params": params,
            "judge": judge_model,
            "prompt": options.prompt,
            "gate": suite.spec.model_extra or {},
        }
        if options.prompts:
            config["prompts"] = [p.label for p in options.prompts]
        variants = _variants(suite, options, params)  # every case rendered before anything runs: errors come first
        await asyncio.to_thread(self._start, run_id, suite, config, infos)
        work = [
            (case, metrics, model, label, variant_params)
            for model in options.models
            for label, variant_params, cases in variants
            for case, metrics in cases
        ]
        limit, done = asyncio.Semaphore(options.concurrency), 0
        self.progress(0, len(work))

        async def one(case: Case, metrics: list[Metric], model: str, prompt: str | None, params: dict) -> ResultRow:
            nonlocal done
            async with limit:
                row = await self._case(cache, case, metrics, model, params, prompt, ctx, run_id)
            done += 1
            self.progress(done, len(work))
            return row

        try:
            with ThreadPoolExecutor(options.concurrency, thread_name_prefix="fmstack-metrics") as scoring:
                # metrics (judges among them) block their thread on the loop: they get threads of their own, so
                # they can never starve the default pool the loop's own thread hops use
                self._scoring = scoring
                rows = list(await asyncio.gather(*(one(*w) for w in work)))
                await asyncio.get_running_loop().run_in_executor(scoring, self._pairwise, suite, rows, ctx)
            await asyncio.to_thread(self._save, run_id, rows)
        except BaseException as exc:  # Ctrl-C or a bug: the stored run must not stay "running" forever
            stopped = isinstance(exc, KeyboardInterrupt | asyncio.CancelledError)
            self._mark(run_id, "interrupted" if stopped else "failed")
            raise
        return RunData(run_id, suite.name, utcnow().isoformat(), infos, rows, config)

    async def _case(
        self,
        cache: OutputCache,
        case: Case,
        metrics: list[Metric],
        model: str,
        params: dict,
        prompt: str | None,
        ctx: MetricContext,
        run_id: str,
    ) -> ResultRow:
        row = ResultRow(case.id, model, prompt, case.messages, case.reference, None, None)
        samples: list[Generated] = []
        try:
            for i in range(max((m.samples for m in metrics), default=1)):
                sample_params = params | ({"seed": params.get("seed", 0) + i} if i else {})
                key = cache.key(model=model, prompt=prompt, params=sample_params, messages=case.messages, sample=i)
                generated, cached = await cache.get_or_generate(
                    key, model, lambda p=sample_params: self.generator.generate(model, case.messages, p, run_id)
                )
                samples.append(generated)
                row.cached = cached if i == 0 else row.cached and cached
        except Exception as exc:  # one case's model failure is recorded; the run goes on
            row.error = f"{type(exc).__name__}: {exc}"
            return row
        first = samples[0]
        row.output, row.latency_ms, row.cost = first.text, first.latency_ms, sum(s.cost for s in samples)
        row.prompt_tokens, row.completion_tokens = first.prompt_tokens, first.completion_tokens
        output = Output(
            first.text,
            [s.text for s in samples],
            first.latency_ms,
            first.prompt_tokens,
            first.completion_tokens,
            row.cost,
        )
        for metric in metrics:
            if isinstance(metric, Pairwise):
                continue  # needs every model's answer: scored after all cases (`_pairwise`)
            score = await asyncio.get_running_loop().run_in_executor(
                self._scoring, score_one, metric, case, output, ctx
            )
            row.scores[metric_label(metric)] = MetricScore(score.value, score.passed, score.reason, score.error)
        return row

    def _pairwise(self, suite: Suite, rows: list[ResultRow], ctx: MetricContext) -> None:
        """Each model's answer against the first model's, per case, for every pairwise metric."""
        by_case: dict[str, list[ResultRow]] = {}
        for row in rows:
            by_case.setdefault(row.case_id, []).append(row)
        for case, metrics in suite.cases:
            baseline, *others = by_case[case.id]
            for metric in (m for m in metrics if isinstance(m, Pairwise)):
                label = metric_label(metric)
                for row in others:
                    if baseline.error or row.error:
                        continue
                    score = _pairwise_score(metric, case, baseline.output or "", row.output or "", ctx)
                    row.scores[label] = MetricScore(score.value, score.passed, score.reason, score.error)

    def _info(self, metric: Metric, judge_model: str | None) -> MetricInfo:
        judge = judge_model if "judge" in metric.requires else None
        return MetricInfo(
            metric_label(metric),
            metric.name,
            metric.higher_is_better,
            metric.threshold,
            judge,
            latest_agreement(self.sessions, judge, metric.name) if judge else None,
        )

    def _start(self, run_id: str, suite: Suite, config: dict, infos: list[MetricInfo]) -> None:
        with self.sessions.begin() as s:
            s.add(
                EvalRun(
                    id=run_id,
                    suite=suite.name,
                    suite_path=str(suite.path) if suite.path else None,
                    status="running",
                    config=config,
                    metrics=[asdict(i) for i in infos],
                )
            )

    def _mark(self, run_id: str, status: str) -> None:
        with self.sessions.begin() as s:
            s.get(EvalRun, run_id).status = status

    def _save(self, run_id: str, rows: list[ResultRow]) -> None:
        with self.sessions.begin() as s:
            s.add_all(_result(run_id, row) for row in rows)
            s.get(EvalRun, run_id).status = "done"


def _variants(suite: Suite, options: RunOptions, params: dict) -> list[tuple[str | None, dict, list]]:
    """(prompt label, generation parameters, cases) per prompt variant: the suite's own cases when no stored prompt
    is given, else each case rendered by each stored version (its parameters over the suite's). A variable a version
    needs and a case lacks is an error naming both, before anything is generated."""
    if not options.prompts:
        return [(options.prompt, params, suite.cases)]
    out = []
    for prompt in options.prompts:
        variant_params = params | {k: v for k, v in prompt.params.items() if k in GENERATION_PARAMS}
        cases = []
        for case, metrics in suite.cases:
            variables = ({"input": case.question} if case.question else {}) | case.vars
            try:
                messages = prompt.render(variables)
            except FmstackError as exc:
                raise FmstackError(f"{suite.path or suite.name}: case '{case.id}': {exc.message}") from None
            if suite.spec.system and not any(m["role"] == "system" for m in messages):
                messages.insert(0, {"role": "system", "content": suite.spec.system})
            cases.append((replace(case, messages=messages), metrics))
        out.append((prompt.label, variant_params, cases))
    return out


def _result(run_id: str, row: ResultRow) -> EvalResult:
    fields = {k: v for k, v in asdict(row).items() if k != "scores"}
    return EvalResult(run_id=run_id, **fields, scores={k: asdict(v) for k, v in row.scores.items()})


def make_judge(cache: OutputCache, generator: Generator, model: str | None, run_id: str | None = None):
    """A synchronous judge for metrics (they run in worker threads), answered on the running event loop by the
    generator, through the cache: re-scoring unchanged answers asks the judge nothing."""
    if model is None:
        return None
    loop = asyncio.get_running_loop()

    def judge(messages: list[dict], response_format: dict | None = None) -> str:
        params = JUDGE_PARAMS | ({"response_format": response_format} if response_format else {})
        key = cache.key(model=model, judge=True, params=params, messages=messages)
        if (hit := cache.get(key)) is None:  # cache I/O here, in the metric's thread: the loop only generates
            generation = generator.generate(model, messages, params, run_id)
            hit = asyncio.run_coroutine_threadsafe(generation, loop).result()
            cache.put(key, model, hit)
        return hit.text

    return judge


def score_one(metric: Metric, case: Case, output: Output, ctx: MetricContext) -> Score:
    """A metric's score, or why there is none: a missing input, or the metric's own failure."""
    missing = [need for need in sorted(metric.requires) if not _has(need, case, ctx)]
    if missing:
        return Score(None, error=f"needs {', '.join(missing)}, which this case/run does not have")
    try:
        score = metric.score(case, output, ctx)
    except Exception as exc:  # a broken metric must not stop the run
        return Score(None, error=f"{type(exc).__name__}: {exc}")
    if score.passed is None and score.error is None:
        score.passed = metric.judge_pass(score.value)
    return score


def _pairwise_score(metric: Pairwise, case: Case, baseline: str, candidate: str, ctx: MetricContext) -> Score:
    if ctx.judge is None:
        return Score(None, error="needs judge, which this run does not have")
    try:
        score = metric.compare(case, baseline, candidate, ctx)
    except Exception as exc:  # a broken judge must not stop the run
        return Score(None, error=f"{type(exc).__name__}: {exc}")
    score.passed = metric.judge_pass(score.value)
    return score


def _has(need: str, case: Case, ctx: MetricContext) -> bool:
    return {
        "reference": bool(case.references),
        "context": bool(case.context),
        "tests": bool(case.tests),
        "judge": ctx.judge is not None,
        "embed": ctx.embed is not None,
    }.get(need, True)


def latest_agreement(sessions: sessionmaker, judge: str, metric: str) -> dict | None:
    with sessions() as s:
        row = s.scalars(
            select(JudgeCalibration)
            .where(JudgeCalibration.judge == judge, JudgeCalibration.metric == metric)
            .order_by(JudgeCalibration.created_at.desc())
        ).first()
        if row is None:
            return None
        return {"kappa": row.kappa, "accuracy": row.accuracy, "n": row.n, "calibrated_at": row.created_at.isoformat()}


def load_run(sessions: sessionmaker, run_id: str) -> RunData:
    """A stored run, as the same RunData the runner returned."""
    from fmstack.core.errors import NotFound

    with sessions() as s:
        run = s.get(EvalRun, run_id)
        if run is None:
            raise NotFound(f"No eval run '{run_id}'. List runs with `fmstack eval list`.")
        rows = [
            ResultRow(
                r.case_id,
                r.model,
                r.prompt,
                r.input,
                r.reference,
                r.output,
                r.error,
                r.latency_ms,
                r.prompt_tokens,
                r.completion_tokens,
                r.cost,
                r.cached,
                {k: MetricScore(**v) for k, v in (r.scores or {}).items()},
            )
            for r in run.results
        ]
        return RunData(
            run.id, run.suite, run.created_at.isoformat(), [MetricInfo(**m) for m in run.metrics], rows, run.config
        )


def list_runs(sessions: sessionmaker, limit: int = 20) -> list[RunSummary]:
    """Stored runs, newest first."""
    with sessions() as s:
        counts = dict(s.execute(select(EvalResult.run_id, func.count()).group_by(EvalResult.run_id)).all())
        runs = s.scalars(select(EvalRun).order_by(EvalRun.created_at.desc()).limit(limit))
        return [
            RunSummary(
                run.id,
                run.created_at,
                run.suite,
                run.config.get("models", []),
                run.config.get("prompts", []),
                counts.get(run.id, 0),
                run.status,
            )
            for run in runs
        ]


def gate(run: RunData, min_pass_rate: float = 1.0) -> list[str]:
    """Thresholds as a CI gate: per metric with a threshold and per variant, the pass rate must reach
    `min_pass_rate` (errors count as failures). Returns what failed, empty when the run passes."""
    failures = []
    for info in run.metrics:
        if info.threshold is None:
            continue
        for variant in run.variants:
            rows = [r for r in run.rows if r.variant == variant and (info.label in r.scores or r.error)]
            if not rows:
                continue
            rate = sum(info.label in r.scores and bool(r.scores[info.label].passed) for r in rows) / len(rows)
            if rate < min_pass_rate:
                failures.append(
                    f"{variant}: {info.label} passed {rate:.0%} of {len(rows)} cases (needs {min_pass_rate:.0%})"
                )
    return failures
