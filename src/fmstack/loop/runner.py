"""`run_loop`: the steps in order, each recorded in the store as it finishes.

Everything the user can get wrong (the app, the base model, the config's names) is checked before the run is
recorded, and is an `FmstackError` (exit 2). After that a run ends in one of four ways, each kept in `loop_runs`:
`done` (a candidate serves a share of the route), `stopped` (too little data to train or to gate on), `gate-failed`
(the candidate is not better; the scores are kept) and `failed` / `interrupted` (an error or a kill; `--resume`
continues from the first unfinished step).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from fmstack.app.ab.routes import NAME as ROUTE_NAME
from fmstack.app.eval.metrics import metric_names
from fmstack.core.config import Settings
from fmstack.core.errors import FmstackError
from fmstack.core.registry import Registry
from fmstack.core.store.schema import Trace
from fmstack.loop.config import LoadedLoopConfig, LoopConfig, LoopConfigError
from fmstack.loop.context import LoopContext, LoopStopped, Report, StepResult
from fmstack.loop.data import collect
from fmstack.loop.gate import gate
from fmstack.loop.runs import LoopRuns, RunInfo, safe_name
from fmstack.loop.ship import export, register, start_ab
from fmstack.loop.train import train

STEPS: list[tuple[str, Callable[[LoopContext], StepResult]]] = [
    ("data", collect),  # traces, feedback, reviews -> SFT/DPO files and the gate's suite
    ("finetune", train),  # LoRA SFT (then DPO) of the base, merged
    ("export", export),  # GGUF, quantized by llama.cpp: what would be served
    ("gate", gate),  # the GGUF against production on held-out reviewed answers
    ("register", register),  # only now in the registry
    ("ab", start_ab),  # a small share of the route
]
MODEL_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*$")


@dataclass
class LoopResult:
    """How the run ended, with every step's output (the gate's scores among them)."""

    run: RunInfo
    status: str
    reason: str | None
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)


def run_loop(
    app: str,
    base: str | None,
    loaded: LoadedLoopConfig,
    settings: Settings,
    sessions: sessionmaker,
    report: Report,
    resume: bool = False,
) -> LoopResult:
    """Check, then run (or resume) one loop of `app`; returns how it ended."""
    runs = LoopRuns(sessions)
    ctx = _resumed(app, base, runs, settings, sessions, report) if resume else None
    ctx = ctx or _started(app, base, loaded, runs, settings, sessions, report)
    return _steps(ctx)


def _started(app: str, base: str | None, loaded: LoadedLoopConfig, runs: LoopRuns, settings: Settings,
             sessions: sessionmaker, report: Report) -> LoopContext:  # fmt: skip
    """A new run, after every check; its data window starts where the last completed run's ended."""
    config = loaded.config
    base = _check(app, base, loaded, settings, sessions)
    _refuse_concurrent(app, runs, report)
    last = runs.last_completed(app) if config.data.window == "since-last-loop" else None
    since = last.until if last else None
    run = runs.start(app, base, since, config.model_dump(mode="json"), str(settings.home / "loops"))
    candidate = config.candidate or _default_name(app, run.id, Registry(settings))
    runs.update(run.id, candidate=candidate)
    report("loop", f"loop {run.id} of {app}: base {base}, candidate {candidate}, data "
           + (f"since loop {last.id} ({since:%Y-%m-%d %H:%M:%S} UTC)" if last else "from the first trace"))  # fmt: skip
    return LoopContext(app, base, candidate, config, settings, sessions, runs, runs.get(run.id), report, {})


def _resumed(app: str, base: str | None, runs: LoopRuns, settings: Settings, sessions: sessionmaker,
             report: Report) -> LoopContext:  # fmt: skip
    """The latest unfinished run of `app`, claimed by this process, with its finished steps' outputs."""
    pending = runs.unfinished(app)
    if pending is None:
        raise FmstackError(f"--resume: no interrupted or failed loop of '{app}' to resume; run without --resume.")
    if base and base != pending.base:
        raise FmstackError(f"--base {base}: loop {pending.id} fine-tunes {pending.base}; drop --resume to start over.")
    run = runs.claim(pending.id)
    done = [s for s, _ in STEPS if s in run.steps]
    report("loop", f"resuming loop {run.id} of {app} at {run.step} (finished: {', '.join(done) or 'none'})")
    config = LoopConfig.model_validate(run.config)
    candidate = run.candidate or _default_name(app, run.id, Registry(settings))
    return LoopContext(app, run.base, candidate, config, settings, sessions, runs, run, report, dict(run.steps))


def _default_name(app: str, run_id: int, registry: Registry) -> str:
    """APP-loop-N as a model name; a suffix if a model of that name exists (a store reset, a copied registry)."""
    name = f"{safe_name(app)}-loop-{run_id}"
    return name if name not in registry.specs else f"{name}-{uuid.uuid4().hex[:6]}"


def _refuse_concurrent(app: str, runs: LoopRuns, report: Report) -> None:
    """One loop per app at a time; a killed one is marked interrupted (and can still be resumed)."""
    pending = runs.unfinished(app)
    if pending is None:
        return
    if pending.status == "running":
        raise FmstackError(f"loop {pending.id} of '{app}' is running (started {pending.started_at:%H:%M:%S}).")
    if pending.status == "interrupted":
        runs.finish(pending.id, "interrupted", pending.step, pending.reason or "the process running it ended")
    report("loop", f"note: loop {pending.id} stopped at step {pending.step} ({pending.status}); starting a new "
           "one (--resume would have continued it)")  # fmt: skip


def _steps(ctx: LoopContext) -> LoopResult:
    """Each step not yet finished, in order; the run's row says how it ended."""
    step = "data"
    try:
        for step, function in STEPS:
            if step in ctx.outputs:
                ctx.report(step, "finished in an earlier attempt")
                continue
            ctx.runs.update(ctx.run.id, step=step)
            result = function(ctx)
            ctx.outputs[step] = result.output
            ctx.runs.step_done(ctx.run.id, step, result.output)
            ctx.report(step, result.summary)
    except LoopStopped as stop:
        ctx.outputs[step] = stop.details
        if stop.details:
            ctx.runs.step_done(ctx.run.id, f"{step}:stopped", stop.details)
        run = ctx.runs.finish(ctx.run.id, stop.status, step, stop.reason)
        ctx.report(step, f"stopped: {stop.reason}")
        return LoopResult(run, stop.status, stop.reason, ctx.outputs)
    except KeyboardInterrupt:
        ctx.runs.finish(ctx.run.id, "interrupted", step, "interrupted (Ctrl-C or SIGTERM)")
        raise
    except BaseException as exc:
        ctx.runs.finish(ctx.run.id, "failed", step, getattr(exc, "message", None) or repr(exc))
        raise
    run = ctx.runs.finish(ctx.run.id, "done", "ab")
    return LoopResult(run, "done", None, ctx.outputs)


def _check(app: str, base: str | None, loaded: LoadedLoopConfig, settings: Settings, sessions: sessionmaker) -> str:
    """Every name the run will use, before anything is recorded; returns the base model."""
    config = loaded.config
    _check_app(app, sessions)
    base = base or config.base
    if not base:
        raise LoopConfigError("--base: give the model to fine-tune (or `base:` in --config).")
    where = "--base" if not config.base or base != config.base else loaded.where("base")
    registry = Registry(settings)
    spec = registry.specs.get(base)
    if spec is None or spec.engine not in ("llamacpp", "transformers"):
        local = sorted(s.name for s in registry if s.engine in ("llamacpp", "transformers"))
        raise LoopConfigError(
            f"{where}: '{base}' is not a local chat model in the registry; known: {', '.join(local)}."
        )
    _check_names(loaded, registry, base)
    _check_metrics(loaded)
    return base


def _check_app(app: str, sessions: sessionmaker) -> None:
    with sessions() as session:
        if session.scalar(select(Trace.id).where(Trace.app == app).limit(1)) is not None:
            return
        apps = sorted(a for a in session.scalars(select(Trace.app).distinct()) if a and a != "fmstack-eval")
    raise LoopConfigError(f"APP: no traces of app '{app}' in the store; apps with traces: {', '.join(apps) or 'none'}.")


def _check_names(loaded: LoadedLoopConfig, registry: Registry, base: str) -> None:
    config = loaded.config
    if config.candidate is not None:
        if not MODEL_NAME.match(config.candidate):
            raise LoopConfigError(f"{loaded.where('candidate')}: '{config.candidate}' is not a model name; use "
                                  "letters, digits, '.', '_' and '-'.")  # fmt: skip
        if config.candidate in registry.specs:
            raise LoopConfigError(f"{loaded.where('candidate')}: '{config.candidate}' is already a registry model.")
    route = config.ab.route or base
    if not ROUTE_NAME.match(route):
        raise LoopConfigError(f"{loaded.where('ab', 'route')}: '{route}' is not a route name.")


def _check_metrics(loaded: LoadedLoopConfig) -> None:
    gate, known = loaded.config.gate, set(metric_names())
    for i, name in enumerate(gate.metrics or []):
        if name not in known:
            raise LoopConfigError(f"{loaded.where('gate', 'metrics', i)}: unknown metric '{name}'; known: "
                                  f"{', '.join(sorted(known))}.")  # fmt: skip
    if gate.metric not in known:
        raise LoopConfigError(f"{loaded.where('gate', 'metric')}: unknown metric '{gate.metric}'; known: "
                              f"{', '.join(sorted(known))}.")  # fmt: skip
    if gate.metrics and gate.metric not in gate.metrics:
        raise LoopConfigError(f"{loaded.where('gate', 'metric')}: '{gate.metric}' is not among gate.metrics.")
