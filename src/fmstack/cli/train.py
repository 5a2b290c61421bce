"""`fmstack train ...`: pretraining, fine-tuning, preference tuning and classification, one command each."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from fmstack.cli.common import console, fail
from fmstack.core.config import get_settings
from fmstack.core.errors import FmstackError

train_app = typer.Typer(
    help="Train models: pretrain from scratch, fine-tune (LoRA or full), DPO, classify.\n\n"
    "Example: fmstack train pretrain --data examples/train/pretrain/out/blocks --config tiny --out runs/tiny",
    no_args_is_help=True,
)


@contextmanager
def _finetune_progress() -> Iterator[Callable[[str, int, int | None, float | None], None]]:
    """One bar per stage of a fine-tune (base model, eval before, training with its loss, eval after, saving)."""
    columns = (BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[loss]}"), TimeElapsedColumn())
    with Progress("{task.description}", *columns, console=console, transient=True) as bar:
        tasks: dict[str, TaskID] = {}

        def update(stage: str, done: int, total: int | None, loss: float | None) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total, loss="")
            bar.update(tasks[stage], completed=done, total=total, loss="" if loss is None else f"loss {loss:.4f}")

        yield update


@train_app.command("finetune")
def finetune(
    model: str = typer.Option(..., "--model", help="A registry model (GGUF models are converted once) or HF folder."),
    data: Path = typer.Option(..., "--data", help="Training file: JSONL (or a JSON array) of {messages: [...]}."),
    out: Path = typer.Option(..., "--out", help="New folder for adapter/, model/ and summary.json."),
    method: str = typer.Option("lora", "--method", help="lora (PEFT adapters) or full (every weight)."),
    eval_data: Path | None = typer.Option(None, "--eval-data", help="Held-out file (default: split from --data)."),
    eval_split: float = typer.Option(0.1, "--eval-split", help="Fraction of --data held out when no --eval-data."),
    epochs: int = typer.Option(1, "--epochs", help="Passes over the training data."),
    steps: int | None = typer.Option(None, "--steps", help="Optimizer steps (overrides --epochs)."),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate (default 2e-4 lora, 2e-5 full)."),
    batch_size: int = typer.Option(4, "--batch-size", help="Conversations per batch and process."),
    grad_accum: int = typer.Option(1, "--grad-accum", help="Batches per optimizer step."),
    max_length: int | None = typer.Option(None, "--max-length", help="Token limit (default: the model's context)."),
    truncate: bool = typer.Option(False, "--truncate", help="Cut longer conversations instead of failing."),
    lora_r: int = typer.Option(8, "--lora-r", help="LoRA rank."),
    lora_alpha: int = typer.Option(16, "--lora-alpha", help="LoRA scaling numerator (scale = alpha / r)."),
    lora_dropout: float = typer.Option(0.05, "--lora-dropout", help="Dropout on the LoRA input."),
    target_modules: str = typer.Option("q_proj,v_proj", "--target-modules", help="Comma-separated linear modules."),
    merge: bool = typer.Option(False, "--merge", help="Also write model/: the adapter merged into the weights."),
    name: str | None = typer.Option(None, "--name", help="Register model/ under this name (implies --merge)."),
    seed: int = typer.Option(0, "--seed", help="Seed for the split, shuffling, dropout and LoRA init."),
) -> None:
    """Supervised fine-tuning on chat data (loss on assistant tokens only), LoRA or full; runs under accelerate.

    Every input is validated before the first step (file, line and field for bad records; lengths against
    --max-length; LoRA target modules). Runs unchanged under `accelerate launch -m fmstack train finetune ...`.

    Example: fmstack train finetune --model smollm2-135m-instruct --data examples/train/sft/train.jsonl --out runs/sft
    """
    from accelerate import PartialState

    from fmstack.model.train.finetune import FinetuneConfig
    from fmstack.model.train.finetune import finetune as run_finetune

    config = FinetuneConfig(
        model=model,
        data=data,
        out=out,
        method=method,
        eval_data=eval_data,
        eval_split=eval_split,
        epochs=epochs,
        steps=steps,
        lr=lr,
        batch_size=batch_size,
        grad_accum=grad_accum,
        max_length=max_length,
        truncate=truncate,
        lora_r=lora_r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=tuple(m.strip() for m in target_modules.split(",") if m.strip()),
        merge=merge,
        name=name,
        seed=seed,
    )
    try:
        with _finetune_progress() as progress:
            summary = run_finetune(config, get_settings(), progress)
    except FmstackError as exc:
        fail(exc)
    if PartialState().is_main_process:
        _print_finetune(summary, out)


def _print_finetune(summary: dict, out: Path) -> None:
    before, after = summary["eval_loss_before"], summary["eval_loss_after"]
    console.print(
        f"{summary['steps']} steps in {summary['seconds']:.0f} s; train loss {summary['train_loss_first']:.3f} -> "
        f"{summary['train_loss_last']:.3f}"
        + (f"; eval loss {before:.3f} -> {after:.3f}" if before is not None else "; no held-out data")
    )
    written = [part for part in (summary["adapter"], summary["model"]) if part]
    console.print(f"wrote {', '.join(f'{out / part}/' for part in written)} and {out / 'summary.json'}")
    if summary["config"]["name"]:
        console.print(f"registered as [cyan]{summary['config']['name']}[/] (engine transformers)")


@train_app.command("classify")
def classify(
    data: Path = typer.Option(..., "--data", help="Labelled texts: CSV with a header row, or JSONL / a JSON array."),
    out: Path = typer.Option(..., "--out", help="Folder for the checkpoint (with id2label) and summary.json."),
    text_field: str = typer.Option("text", "--text-field", help="Column or field that holds the text."),
    label_field: str = typer.Option("label", "--label-field", help="Column or field that holds the label."),
    epochs: float = typer.Option(3.0, "--epochs", help="Passes over the training split."),
    eval_split: float = typer.Option(0.2, "--eval-split", help="Fraction held out (stratified) to score on."),
    lr: float = typer.Option(5e-5, "--lr", help="Peak learning rate."),
    batch_size: int = typer.Option(16, "--batch-size", help="Texts per batch."),
    max_length: int = typer.Option(128, "--max-length", help="Tokens per text; longer ones are cut (and counted)."),
    seed: int = typer.Option(0, "--seed", help="Seed for the split, the head's init and shuffling."),
    force: bool = typer.Option(False, "--force", help="Replace what --out holds."),
) -> None:
    """Fine-tune the packaged MiniLM encoder with a classification head; held-out scores before and after.

    Reports accuracy against the majority-class baseline, per-class precision/recall and the confusion matrix.

    Example: fmstack train classify --data examples/train/spam/spam.csv --out runs/spam
    """
    from fmstack.model.train.classify import ClassifyConfig, train_classifier
    from fmstack.model.train.trainer_progress import RichProgress

    config = ClassifyConfig(text_field, label_field, epochs, eval_split, lr, batch_size, max_length, seed)
    try:
        summary = train_classifier(data, out, get_settings(), config, force=force, callbacks=[RichProgress(console)])
    except FmstackError as exc:
        fail(exc)
    _print_classify(summary, out)


def _print_classify(summary: dict, out: Path) -> None:
    from rich.table import Table

    before, after, labels = summary["before"], summary["after"], summary["labels"]
    base = summary["majority_baseline"]
    console.print(
        f"{summary['train_examples']} train / {summary['eval_examples']} held out, {summary['train_seconds']:.0f} s; "
        f"held-out accuracy {before['accuracy']:.3f} (untrained head) -> [bold]{after['accuracy']:.3f}[/] "
        f"(majority baseline '{base['label']}' {base['accuracy']:.3f})"
    )
    table = Table("label", "precision", "recall", "f1", "support", *[f"→ {p}" for p in labels], title="after")
    for label, row in zip(labels, after["confusion"], strict=True):
        c = after["per_class"][label]
        table.add_row(
            label, f"{c['precision']:.3f}", f"{c['recall']:.3f}", f"{c['f1']:.3f}", str(c["support"]), *map(str, row)
        )
    console.print(table)
    if summary["truncated"]:
        console.print(f"[yellow]{summary['truncated']} text(s) longer than --max-length were cut.[/]")
    console.print(f"wrote {out}/ (checkpoint with id2label) and {out / 'summary.json'}")


@train_app.command("pretrain")
def pretrain(
    data: Path = typer.Option(..., "--data", help="Packed blocks: the blocks/ folder of `fmstack data run`."),
    config: str = typer.Option("small", "--config", help="tiny, small, or a YAML/JSON file (model: and train:)."),
    out: Path = typer.Option(..., "--out", help="Run folder: HF checkpoint, checkpoints/, metrics, loss.png."),
    steps: int | None = typer.Option(None, "--steps", help="Optimizer steps."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Blocks per micro-batch and process."),
    grad_accum: int | None = typer.Option(None, "--grad-accum", help="Micro-batches per optimizer step."),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate (after warmup; cosine decay after)."),
    warmup: int | None = typer.Option(None, "--warmup", help="Steps of linear warmup."),
    eval_every: int | None = typer.Option(None, "--eval-every", help="Validation loss every N steps (and at the end)."),
    checkpoint_every: int | None = typer.Option(None, "--checkpoint-every", help="Checkpoint every N steps, 0 never."),
    seed: int | None = typer.Option(None, "--seed", help="Seed for the weights and the data order."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    name: str | None = typer.Option(None, "--name", help="Register the result under this name (transformers engine)."),
) -> None:
    """Pretrain a Llama-architecture model from scratch on packed blocks (next-token prediction).

    Flags override the config's train: section. Everything is checked before the first step. Runs unchanged
    under `accelerate launch -m fmstack train pretrain ...` on many processes, GPUs or machines.

    Example: fmstack train pretrain --data examples/train/pretrain/out/blocks --config small --out runs/small
    """
    from fmstack.model.train.configs import load_config, with_overrides
    from fmstack.model.train.pretrain import plan_run
    from fmstack.model.train.pretrain import pretrain as run_pretrain

    overrides = {"steps": steps, "batch_size": batch_size, "grad_accum": grad_accum, "lr": lr, "warmup": warmup,
                 "eval_every": eval_every, "checkpoint_every": checkpoint_every, "seed": seed}  # fmt: skip
    try:
        plan = plan_run(data, with_overrides(load_config(config), overrides), out, resume)
        with _pretrain_progress() as report:
            result = run_pretrain(plan, report)
        if result.is_main_process and name:
            _register_pretrained(name, out, plan.config.model.max_position_embeddings)
    except FmstackError as exc:
        fail(exc)
    if result.is_main_process:
        _print_pretrain(result.summary, out, name)


@contextmanager
def _pretrain_progress() -> Iterator[Callable[[str, dict], None]]:
    """A bar over steps with the loss, tokens/s and ETA; evaluations and checkpoints print a line each. The bar
    starts at the first report: under `accelerate launch` only the main process reports, so only it shows one."""
    columns = (
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}  {task.fields[speed]} tok/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    bar = Progress("pretraining", *columns, console=console)
    task = bar.add_task("pretrain", total=None, loss="-", speed="-")

    def report(kind: str, row: dict) -> None:
        if kind == "start":
            console.print(f"{row['parameters']:,} parameters; step {row['step']} of {row['steps']}")
            bar.reset(task, total=row["steps"], completed=row["step"])  # a resumed run's ETA counts from here
            bar.start()
        elif kind == "step":
            bar.update(task, completed=row["step"], loss=f"{row['loss']:.3f}", speed=f"{row['tokens_per_s']:,.0f}")
        elif kind == "eval":
            ppl = row["val_perplexity"]
            console.print(f"step {row['step']}: val loss {row['val_loss']:.4f}, perplexity {ppl:.2f}")
        else:
            console.print(f"step {row['step']}: checkpoint {row['path']}")

    try:
        yield report
    finally:
        bar.stop()


def _register_pretrained(name: str, out: Path, context: int) -> None:
    from fmstack.core.registry import register_user_model

    register_user_model(get_settings(), name, engine="transformers", source=f"path:{out.resolve()}",
                        context_length=context, description="pretrained by fmstack train pretrain")  # fmt: skip


def _print_pretrain(summary: dict, out: Path, name: str | None) -> None:
    console.print(
        f"{summary['tokens_trained']:,} tokens ({summary['epochs']} epochs) in {summary['wall_seconds']:.0f} s, "
        f"{summary['tokens_per_s']:,.0f} tok/s; train loss {summary['train_loss']:.3f}, "
        f"[bold]val loss {summary['val_loss']:.3f} (perplexity {summary['val_perplexity']:.1f})[/]"
    )
    console.print(f"wrote {out}/ (Hugging Face checkpoint), metrics.jsonl, summary.json, loss.png")
    if name:
        console.print(f"registered as [cyan]{name}[/] (engine transformers)")


@train_app.command("dpo")
def dpo(
    model: str = typer.Option(..., "--model", help="A registry model (GGUF models are converted once) or HF folder."),
    data: Path = typer.Option(..., "--data", help="Preference pairs: JSONL of {prompt, chosen, rejected}."),
    out: Path = typer.Option(..., "--out", help="New folder for model/ (merged), adapter/ and summary.json."),
    eval_data: Path | None = typer.Option(None, "--eval-data", help="Held-out pairs, scored before and after."),
    beta: float = typer.Option(0.1, "--beta", help="How far the policy may move from the reference (higher: less)."),
    lora: bool = typer.Option(True, "--lora/--no-lora", help="LoRA adapters (reference = adapter off) or all weights."),
    epochs: float = typer.Option(1.0, "--epochs", help="Passes over the pairs."),
    steps: int | None = typer.Option(None, "--steps", help="Optimizer steps (overrides --epochs)."),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate (default 5e-5 with LoRA, 5e-7 without)."),
    batch_size: int = typer.Option(2, "--batch-size", help="Pairs per batch and process."),
    grad_accum: int = typer.Option(1, "--grad-accum", help="Batches per optimizer step."),
    max_length: int = typer.Option(1024, "--max-length", help="Token limit of prompt + answer; longer pairs fail."),
    lora_r: int = typer.Option(8, "--lora-r", help="LoRA rank."),
    lora_alpha: int = typer.Option(16, "--lora-alpha", help="LoRA scaling numerator (scale = alpha / r)."),
    target_modules: str = typer.Option("q_proj,v_proj", "--target-modules", help="Comma-separated linear modules."),
    name: str | None = typer.Option(None, "--name", help="Register model/ under this name (engine transformers)."),
    seed: int = typer.Option(0, "--seed", help="Seed for shuffling and the LoRA init."),
) -> None:
    """Preference tuning with DPO (TRL) on chosen/rejected pairs; rewards and margins before and after.

    Pairs are TRL's standard (strings) or conversational (message lists) format, as `fmstack data from-traces
    --format dpo` writes them. Runs unchanged under `accelerate launch -m fmstack train dpo ...`.

    Example: fmstack train dpo --model smollm2-135m-instruct --data examples/train/dpo/prefs.jsonl --out runs/dpo
    """
    from accelerate import PartialState

    from fmstack.cli.common import preparing
    from fmstack.model.train.dpo import DpoConfig, train_dpo
    from fmstack.model.train.trainer_progress import RichProgress

    config = DpoConfig(
        model=model,
        data=data,
        out=out,
        eval_data=eval_data,
        beta=beta,
        lora=lora,
        epochs=epochs,
        steps=steps,
        lr=lr,
        batch_size=batch_size,
        grad_accum=grad_accum,
        max_length=max_length,
        lora_r=lora_r,
        lora_alpha=lora_alpha,
        target_modules=tuple(m.strip() for m in target_modules.split(",") if m.strip()),
        name=name,
        seed=seed,
    )
    try:
        summary = train_dpo(config, get_settings(), [RichProgress(console, "DPO")], preparing)
    except FmstackError as exc:
        fail(exc)
    if PartialState().is_main_process:
        _print_dpo(summary, out)


def _print_dpo(summary: dict, out: Path) -> None:
    console.print(f"{summary['pairs']['train']} pairs, {summary['steps']} steps in {summary['train_seconds']:.0f} s")
    for split, count in summary["pairs"].items():
        before, after = summary["before"][split], summary["after"][split]
        console.print(
            f"  {split.replace('_', '-')} pairs ({count}): loss {before['loss']:.3f} -> {after['loss']:.3f}, "
            f"reward margin {after['rewards/margins']:+.3f}, reward accuracy {after['rewards/accuracies']:.2f}, "
            f"log-prob margin (chosen - rejected) {before['logps/margin']:+.2f} -> {after['logps/margin']:+.2f}"
        )
    written = [part for part in (summary["adapter"], summary["model"]) if part]
    console.print(f"wrote {', '.join(f'{out / part}/' for part in written)} and {out / 'summary.json'}")
    if summary["config"]["name"]:
        console.print(f"registered as [cyan]{summary['config']['name']}[/] (engine transformers)")
