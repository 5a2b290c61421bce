"""`fmstack train ...`: pretraining, fine-tuning, preference tuning and classification, one command each."""

from __future__ import annotations

import typer

train_app = typer.Typer(
    help="Train models: pretrain from scratch, fine-tune (LoRA or full), DPO, classify.\n\n"
    "Example: fmstack train pretrain --data data/clean/blocks --config tiny --out runs/tiny",
    no_args_is_help=True,
)
