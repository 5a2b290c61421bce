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

from fmstack.cli.common import command_group, console, preparing
from fmstack.cli.options import FROM_FLAGS, from_config
from fmstack.core.config import get_settings
from fmstack.model.train.configs import (
    ClassifyConfig,
    DpoConfig,
    FinetuneConfig,
    TrainSpec,
    load_config,
    with_overrides,
)

train_app = command_group(
    "Train models: pretrain from scratch, fine-tune (LoRA or full), DPO, classify.\n\n"
    "Example: fmstack train pretrain --data examples/train/pretrain/out/blocks --config tiny --out runs/tiny",
    no_args_is_help=True,
)

# The help of each flag; the flags themselves (names, types, defaults) are the config's fields.
ADAPTER_HELP = {
    "model": "A registry model (GGUF models are converted once) or HF folder.",
    "steps": "Optimizer steps (overrides --epochs).",
    "grad_accum": "Batches per optimizer step.",
    "lora_r": "LoRA rank.",
    "lora_alpha": "LoRA scaling numerator (scale = alpha / r).",
    "target_modules": "Comma-separated linear modules.",
}
FINETUNE_HELP = ADAPTER_HELP | {
    "data": "Training file: JSONL (or a JSON array) of {messages: [...]}.",
    "out": "New folder for adapter/, model/ and summary.json.",
    "method": "lora (PEFT adapters) or full (every weight).",
    "eval_data": "Held-out file (default: split from --data).",
    "eval_split": "Fraction of --data held out when no --eval-data.",
    "epochs": "Passes over the training data.",
    "lr": "Peak learning rate (default 2e-4 lora, 2e-5 full).",
    "batch_size": "Conversations per batch and process.",
    "max_length": "Token limit (default: the model's context).",
    "truncate": "Cut longer conversations instead of failing.",
    "lora_dropout": "Dropout on the LoRA input.",
    "merge": "Also write model/: the adapter merged into the weights.",
    "name": "Register model/ under this name (implies --merge).",
    "seed": "Seed for the split, shuffling, dropout and LoRA init.",
}
DPO_HELP = ADAPTER_HELP | {
    "data": "Preference pairs: JSONL of {prompt, chosen, rejected}.",
    "out": "New folder for model/ (merged), adapter/ and summary.json.",
    "eval_data": "Held-out pairs, scored before and after.",
    "beta": "How far the policy may move from the reference (higher: less).",
    "lora": "LoRA adapters (reference = adapter off) or all weights.",
    "epochs": "Passes over the pairs.",
    "lr": "Peak learning rate (default 5e-5 with LoRA, 5e-7 without).",
    "batch_size": "Pairs per batch and process.",
    "max_length": "Token limit of prompt + answer; longer pairs fail.",
    "name": "Register model/ under this name (engine transformers).",
    "seed": "Seed for shuffling and the LoRA init.",
}
CLASSIFY_HELP = {
    "text_field": "Column or field that holds the text.",
    "label_field": "Column or field that holds the label.",
    "epochs": "Passes over the training split.",
    "eval_split": "Fraction held out (stratified) to score on.",
    "lr": "Peak learning rate.",
    "batch_size": "Texts per batch.",
    "max_length": "Tokens per text; longer ones are cut (and counted).",
    "seed": "Seed for the split, the head's init and shuffling.",
}
PRETRAIN_HELP = {  # flags that override the config's train: section
    "steps": "Optimizer steps.",
    "batch_size": "Blocks per micro-batch and process.",
    "grad_accum": "Micro-batches per optimizer step.",
    "lr": "Peak learning rate (after warmup; cosine decay after).",
    "warmup": "Steps of linear warmup.",
    "eval_every": "Validation loss every N steps (and at the end).",
    "checkpoint_every": "Checkpoint every N steps, 0 never.",
    "seed": "Seed for the weights and the data order.",
}


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
@from_config("config", FinetuneConfig, FINETUNE_HELP)
def finetune(config: FinetuneConfig = FROM_FLAGS) -> None:
    """Supervised fine-tuning on chat data (loss on assistant tokens only), LoRA or full; runs under accelerate.

    Every input is validated before the first step (file, line and field for bad records; lengths against
    --max-length; LoRA target modules). Runs unchanged under `accelerate launch -m fmstack train finetune ...`.

    Example: fmstack train finetune --model smollm2-135m-instruct --data examples/train/sft/train.jsonl --out runs/sft
    """
    from accelerate import PartialState

    from fmstack.model.train.finetune import finetune as run_finetune

    with _finetune_progress() as progress:
        summary = run_finetune(config, get_settings(), progress)
    if PartialState().is_main_process:
        _print_finetune(summary, config.out)


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
@from_config("config", ClassifyConfig, CLASSIFY_HELP)
def classify(
    data: Path = typer.Option(..., "--data", help="Labelled texts: CSV with a header row, or JSONL / a JSON array."),
    out: Path = typer.Option(..., "--out", help="Folder for the checkpoint (with id2label) and summary.json."),
    config: ClassifyConfig = FROM_FLAGS,
    force: bool = typer.Option(False, "--force", help="Replace what --out holds."),
) -> None:
    """Fine-tune the packaged MiniLM encoder with a classification head; held-out scores before and after.

    Reports accuracy against the majority-class baseline, per-class precision/recall and the confusion matrix.

    Example: fmstack train classify --data examples/train/spam/spam.csv --out runs/spam
    """
    from fmstack.model.train.classify import train_classifier
    from fmstack.model.train.trainer_progress import RichProgress

    summary = train_classifier(data, out, get_settings(), config, force=force, callbacks=[RichProgress(console)])
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
@from_config("overrides", TrainSpec, PRETRAIN_HELP, overrides=True)
def pretrain(
    data: Path = typer.Option(..., "--data", help="Packed blocks: the blocks/ folder of `fmstack data run`."),
    config: str = typer.Option("small", "--config", help="tiny, small, or a YAML/JSON file (model: and train:)."),
    out: Path = typer.Option(..., "--out", help="Run folder: HF checkpoint, checkpoints/, metrics, loss.png."),
    overrides: dict = FROM_FLAGS,
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    name: str | None = typer.Option(None, "--name", help="Register the result under this name (transformers engine)."),
) -> None:
    """Pretrain a Llama-architecture model from scratch on packed blocks (next-token prediction).

    Flags override the config's train: section. Everything is checked before the first step. Runs unchanged
    under `accelerate launch -m fmstack train pretrain ...` on many processes, GPUs or machines.

    Example: fmstack train pretrain --data examples/train/pretrain/out/blocks --config small --out runs/small
    """
    from fmstack.model.train.pretrain import plan_run
    from fmstack.model.train.pretrain import pretrain as run_pretrain

    plan = plan_run(data, with_overrides(load_config(config), overrides), out, resume)
    with _pretrain_progress() as report:
        result = run_pretrain(plan, report)
    if result.is_main_process and name:
        _register_pretrained(name, out, plan.config.model.max_position_embeddings)
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
        elif kind == "advice":
            console.print(f"[yellow]note:[/] {row['message']}", soft_wrap=True)
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
@from_config("config", DpoConfig, DPO_HELP)
def dpo(config: DpoConfig = FROM_FLAGS) -> None:
    """Preference tuning with DPO (TRL) on chosen/rejected pairs; rewards and margins before and after.

    Pairs are TRL's standard (strings) or conversational (message lists) format, as `fmstack data from-traces
    --format dpo` writes them. Runs unchanged under `accelerate launch -m fmstack train dpo ...`.

    Example: fmstack train dpo --model smollm2-135m-instruct --data examples/train/dpo/prefs.jsonl --out runs/dpo
    """
    from accelerate import PartialState

    from fmstack.model.train.dpo import train_dpo
    from fmstack.model.train.trainer_progress import RichProgress

    summary = train_dpo(config, get_settings(), [RichProgress(console, "DPO")], preparing)
    if PartialState().is_main_process:
        _print_dpo(summary, config.out)


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
