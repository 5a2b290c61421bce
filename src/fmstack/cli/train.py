"""`fmstack train ...`: pretraining, fine-tuning, preference tuning and classification, one command each."""

from __future__ import annotations

from pathlib import Path

import typer

from fmstack.cli.common import console, fail
from fmstack.config import get_settings
from fmstack.errors import FmstackError

train_app = typer.Typer(
    help="Train models: pretrain from scratch, fine-tune (LoRA or full), DPO, classify.\n\n"
    "Example: fmstack train pretrain --data data/clean/blocks --config tiny --out runs/tiny",
    no_args_is_help=True,
)


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
