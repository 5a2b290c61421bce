"""Steps 3, 5 and 6: export the candidate to GGUF (quantized by llama.cpp), register it, give it an A/B share.

The GGUF is written before the gate on purpose: the gate then scores the very file that would be served, so a
loss from quantization counts against the candidate. It is registered only after the gate passed, so a rejected
candidate never appears in `fmstack models` (its file stays in the run's folder for a look).
"""

from __future__ import annotations

from pathlib import Path

from fmstack.app.ab import RouteStore
from fmstack.core.registry import ModelSpec, Registry, register_user_model
from fmstack.loop.context import LoopContext, StepResult
from fmstack.model.export.gguf import export_gguf


def export(ctx: LoopContext) -> StepResult:
    """CHECKPOINT -> RUN/CANDIDATE.QUANT.gguf (atomic: a killed export leaves no file)."""
    quant = ctx.config.export.quant
    checkpoint = Path(ctx.outputs["finetune"]["checkpoint"])
    result = export_gguf(checkpoint, ctx.workdir / f"{ctx.candidate}.{quant}.gguf", quant, ctx.candidate)
    output = {"path": str(result.path), "quant": quant, "size_bytes": result.size_bytes,
              "context_length": result.context_length}  # fmt: skip
    return StepResult(output, f"wrote {result.path} ({quant}, {result.size_bytes / 1e6:,.1f} MB)")


def candidate_spec(ctx: LoopContext) -> ModelSpec:
    """The candidate as a registry entry (llama.cpp serves the exported file)."""
    exported = ctx.outputs["export"]
    return ModelSpec(
        name=ctx.candidate,
        engine="llamacpp",
        source=f"path:{exported['path']}",
        context_length=exported["context_length"],
        description=f"{ctx.base} fine-tuned by loop {ctx.run.id} of {ctx.app} ({exported['quant']})",
    )


def register(ctx: LoopContext) -> StepResult:
    spec = candidate_spec(ctx)
    register_user_model(ctx.settings, spec.name, engine=spec.engine, source=spec.source,
                        context_length=spec.context_length, description=spec.description)  # fmt: skip
    return StepResult({"name": spec.name}, f"registered {spec.name} (engine llamacpp, {spec.source})")


def start_ab(ctx: LoopContext) -> StepResult:
    """Create the route (production 100 - share, candidate share), or give the candidate its share of a live one,
    taken from the other variants in proportion to their weights."""
    routes = RouteStore(ctx.sessions, Registry(ctx.settings))  # a new registry: it knows the candidate now
    share, actor = ctx.config.ab.share, f"fmstack loop {ctx.run.id}"
    if not (current := {r.name: r for r in routes.list()}.get(ctx.route)):
        production = ctx.outputs["gate"]["production"]
        info = routes.create(ctx.route, {production: 100 - share, ctx.candidate: share}, actor)
        action = "created"
    elif current.weights.get(ctx.candidate):
        info, action = current, "already had"  # a resumed run whose split was written before it was recorded
    else:
        weights = scale({n: w for n, w in current.weights.items() if w}, 100 - share)
        info = routes.split(ctx.route, {**weights, ctx.candidate: share}, actor)
        action = "split"
    output = {"route": info.name, "split": info.split, "action": action}
    return StepResult(output, f"{action} route {info.name}: {info.split}")


def scale(weights: dict[str, int], total: int) -> dict[str, int]:
    """Whole percents in proportion to `weights`, summing to `total` (largest remainders get the leftovers)."""
    whole = sum(weights.values())
    exact = {name: weight * total / whole for name, weight in weights.items()}
    out = {name: int(value) for name, value in exact.items()}
    for name in sorted(exact, key=lambda n: exact[n] - out[n], reverse=True)[: total - sum(out.values())]:
        out[name] += 1
    return out
