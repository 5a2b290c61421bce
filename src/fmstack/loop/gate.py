"""Step 4, gate: the candidate's GGUF against the production variant on the suite of held-out reviewed answers.

Both are eval runs of `fmstack eval` (stored, so `fmstack eval compare A B` shows them again), generated through
the gateway at temperature 0; the comparison is `eval compare`'s paired bootstrap. The candidate is known to this
gateway only (an in-memory registry entry), not registered yet. It passes when its mean on `gate.metric` beats
production's by at least `gate.min_delta` and no metric of the suite is significantly worse.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

from fmstack.app.ab import RouteStore
from fmstack.app.eval.compare import MetricDelta, compare_runs
from fmstack.app.eval.generate import LocalGenerator
from fmstack.app.eval.results import RunData
from fmstack.app.eval.runner import Runner, RunOptions
from fmstack.app.eval.suite import Suite, load_suite
from fmstack.core.errors import NotFound
from fmstack.core.registry import Registry
from fmstack.gateway import Gateway
from fmstack.loop.context import LoopContext, LoopStopped, StepResult
from fmstack.loop.ship import candidate_spec


def production_variant(ctx: LoopContext) -> str:
    """What serves the route now: its largest share, or the base model when there is no route yet."""
    try:
        route = RouteStore(ctx.sessions, Registry(ctx.settings)).get(ctx.route)
    except NotFound:
        return ctx.base
    return max(route.variants, key=lambda v: v.weight).model


def gate(ctx: LoopContext) -> StepResult:
    production = production_variant(ctx)
    suite = load_suite(Path(ctx.outputs["data"]["gate_suite"]))
    ctx.report("gate", f"{len(suite.cases)} cases: {production} (production) and {ctx.candidate} (candidate)")
    runs = _evaluate(ctx, suite, [production, ctx.candidate])
    comparison = compare_runs(runs[production], runs[ctx.candidate])
    pooled = [d for d in comparison.deltas if d.variant is None]
    scores = [_score(d) for d in pooled]
    reasons = _reasons(ctx, pooled)
    output = {"production": production, "candidate": ctx.candidate, "cases": comparison.n_paired,
              "run_production": runs[production].id, "run_candidate": runs[ctx.candidate].id,
              "scores": scores, "passed": not reasons, "reasons": reasons}  # fmt: skip
    table = "; ".join(_line(s) for s in scores)
    if reasons:
        raise LoopStopped("gate-failed", f"gate failed: {'; '.join(reasons)}. Scores: {table}", output)
    return StepResult(output, f"passed on {comparison.n_paired} cases: {table}")


def _evaluate(ctx: LoopContext, suite: Suite, models: list[str]) -> dict[str, RunData]:
    """One eval run per model, through a gateway that knows the unregistered candidate."""
    gateway = Gateway.open(ctx.settings)
    gateway.registry.specs[ctx.candidate] = candidate_spec(ctx)
    try:
        runner = Runner(ctx.sessions, LocalGenerator(gateway), _embedder(gateway))
        concurrency = ctx.config.gate.concurrency

        async def each() -> dict[str, RunData]:  # one event loop: the gateway's schedulers live on it
            return {m: await runner.run(suite, RunOptions([m], concurrency)) for m in models}

        return asyncio.run(each())
    finally:
        gateway.close()


def _embedder(gateway: Gateway):
    """Embeddings for the semantic metrics, loaded only if a metric asks."""
    return lambda texts: gateway.pool.embedding(gateway.settings.embedding_model).embed(texts, truncate=True)[0]


def _reasons(ctx: LoopContext, deltas: list[MetricDelta]) -> list[str]:
    gate_spec = ctx.config.gate
    main = next((d for d in deltas if _name(d.label) == gate_spec.metric), None)
    reasons = []
    if main is None or main.n == 0 or math.isnan(main.delta):
        reasons.append(f"no {gate_spec.metric} scores to compare")
    elif _gain(main) < gate_spec.min_delta:
        reasons.append(f"{main.label} {_gain(main):+.3f} is under gate.min_delta {gate_spec.min_delta:+.3f}")
    for d in deltas:
        if d.significant and d.improved is False:
            reasons.append(f"{d.label} significantly worse, {d.delta:+.3f} [{d.low:+.3f}, {d.high:+.3f}]")
    return reasons


def _gain(d: MetricDelta) -> float:
    """The candidate's change in the metric's good direction."""
    return d.delta if d.higher_is_better else -d.delta


def _name(label: str) -> str:
    return label.split("≥")[0]


def _score(d: MetricDelta) -> dict[str, Any]:
    return {"metric": d.label, "production": _round(d.mean_a), "candidate": _round(d.mean_b),
            "delta": _round(d.delta), "low": _round(d.low), "high": _round(d.high), "n": d.n}  # fmt: skip


def _round(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 4)


def _line(score: dict[str, Any]) -> str:
    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    return (f"{score['metric']} production {f(score['production'])}, candidate {f(score['candidate'])}, "
            f"{score['delta'] or 0:+.3f} [{f(score['low'])}, {f(score['high'])}] over {score['n']} cases")  # fmt: skip
