"""Step 2, finetune: LoRA SFT of the base on the loop's SFT records (merged, so it can be exported), then DPO on
its preference pairs when the config asks for both. Both trainers are fmstack's own (`train finetune`, `train
dpo`); this module only maps the loop config onto theirs and keeps a killed run's half-written folders out of a
resumed one's way."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from fmstack.loop.context import LoopContext, StepResult
from fmstack.model.train.configs import DpoConfig, FinetuneConfig


def train(ctx: LoopContext) -> StepResult:
    """The candidate's merged Hugging Face checkpoint: SFT, DPO, or SFT then DPO."""
    data = ctx.outputs["data"]
    checkpoint, output, said = ctx.base, {}, []
    if "sft_file" in data:
        summary = _sft(ctx, Path(data["sft_file"]))
        checkpoint = str(ctx.workdir / "sft" / "model")
        output["sft"] = _brief(summary, "eval_loss_before", "eval_loss_after")
        said.append(_said("SFT", summary, "eval_loss_before", "eval_loss_after"))
    if "dpo_file" in data:
        summary = _dpo(ctx, Path(data["dpo_file"]), checkpoint)
        checkpoint = str(ctx.workdir / "dpo" / "model")
        output["dpo"] = {"steps": summary["steps"], "pairs": summary["pairs"]["train"]}
        said.append(f"DPO {summary['pairs']['train']} pairs, {summary['steps']} steps")
    output["checkpoint"] = checkpoint
    return StepResult(output, f"{'; '.join(said)}; merged weights in {checkpoint}")


def _fresh(out: Path) -> Path:
    """An empty output folder: what a killed attempt left there (it is this run's own folder) is removed."""
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(out.with_name(f".{out.name}.partial"), ignore_errors=True)
    return out


def _sft(ctx: LoopContext, data: Path) -> dict[str, Any]:
    from fmstack.model.train.finetune import finetune

    spec = ctx.config.finetune
    config = FinetuneConfig(
        model=ctx.base, data=data, out=_fresh(ctx.workdir / "sft"), method="lora", eval_split=0.1,
        epochs=spec.epochs, steps=spec.steps, lr=spec.lr, batch_size=spec.batch_size, grad_accum=spec.grad_accum,
        max_length=spec.max_length, truncate=True, lora_r=spec.lora_r, lora_alpha=spec.lora_alpha,
        target_modules=tuple(spec.target_modules), merge=True, seed=spec.seed,
    )  # fmt: skip
    return finetune(config, ctx.settings, _progress(ctx, "finetune"))


def _dpo(ctx: LoopContext, data: Path, model: str) -> dict[str, Any]:
    from fmstack.model.train.dpo import train_dpo

    spec = ctx.config.dpo
    config = DpoConfig(
        model=model, data=data, out=_fresh(ctx.workdir / "dpo"), beta=spec.beta, lora=True, epochs=spec.epochs,
        steps=spec.steps, lr=spec.lr, batch_size=spec.batch_size, max_length=spec.max_length, lora_r=spec.lora_r,
        lora_alpha=spec.lora_alpha, target_modules=tuple(ctx.config.finetune.target_modules), seed=spec.seed,
    )  # fmt: skip
    return train_dpo(config, ctx.settings)


def _progress(ctx: LoopContext, step: str):
    """A line per stage and about five during training: enough to see it move, little enough for a log."""
    last = {"stage": None}

    def update(stage: str, done: int, total: int | None, loss: float | None) -> None:
        if stage != last["stage"]:
            last["stage"] = stage
            ctx.report(step, stage)
        elif stage == "training" and total and loss is not None and done % max(1, total // 5) == 0:
            ctx.report(step, f"step {done}/{total}, loss {loss:.3f}")

    return update


def _brief(summary: dict[str, Any], *keys: str) -> dict[str, Any]:
    wanted = ("steps", "train_examples", "eval_examples", "train_loss_first", "train_loss_last", "seconds", *keys)
    return {k: summary.get(k) for k in wanted}


def _said(what: str, summary: dict[str, Any], before: str, after: str) -> str:
    line = f"{what} {summary['train_examples']} examples, {summary['steps']} steps in {summary['seconds']:.0f} s"
    if summary.get(before) is not None:
        line += f", held-out loss {summary[before]:.3f} -> {summary[after]:.3f}"
    return line
