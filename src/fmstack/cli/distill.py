"""`fmstack train distill`: a teacher's answers (and, with a shared tokenizer, its distributions) into a student.
Registered on the `train` group by `fmstack.cli`, because its optional answer filter needs the eval layer."""

from __future__ import annotations

from pathlib import Path

import typer

from fmstack.cli.common import console
from fmstack.cli.options import FROM_FLAGS, from_config
from fmstack.cli.train import ADAPTER_HELP, _finetune_progress, _print_finetune
from fmstack.core.config import get_settings
from fmstack.model.train.configs import DistillConfig

DISTILL_HELP = {k: ADAPTER_HELP[k] for k in ("steps", "grad_accum", "lora_r", "lora_alpha", "target_modules")} | {
    "teacher": "The model whose answers (and logits) are learned: a registry model.",
    "student": "The model to train: a registry model or Hugging Face folder.",
    "prompts": "JSONL of {prompt} or {messages} (+ optional reference); an SFT file works.",
    "out": "Run folder: answers.jsonl (resumable), train.jsonl, student/, summary.json.",
    "level": "sequence (the teacher's answers) or logit (+ its top-k logits; same tokenizer).",
    "answers": "teacher, or reference: the control run on the prompts' own answers.",
    "max_tokens": "Longest teacher answer; answers cut there are dropped.",
    "temperature": "Teacher sampling temperature (0: greedy).",
    "concurrency": "Teacher requests at once (the engine batches them).",
    "keep_truncated": "Keep answers cut at --max-tokens.",
    "kd_temperature": "Softmax temperature T of the KL term (logit level).",
    "top_k": "Teacher logits kept per token (logit level).",
    "alpha": "Weight of the KL term; 1 - alpha on cross-entropy (logit level).",
    "method": "lora or full fine-tune of the student.",
    "eval_split": "Fraction of the answers held out (loss and KL before/after).",
    "epochs": "Passes over the answers.",
    "lr": "Peak learning rate (default 2e-4 lora, 2e-5 full).",
    "batch_size": "Conversations per batch and process.",
    "max_length": "Token limit (default: the student's context).",
    "name": "Register the student under this name (engine transformers).",
    "seed": "Seed for the teacher's sampling, the split and training.",
}


@from_config("config", DistillConfig, DISTILL_HELP)
def distill(
    config: DistillConfig = FROM_FLAGS,
    filter_spec: str = typer.Option(
        None, "--filter", help="Keep only answers passing an eval metric: json_valid, token_f1>=0.5, correctness."
    ),
    judge: str = typer.Option(None, "--judge", help="Judge model for a judged --filter metric."),
) -> None:
    """Distil a teacher into a smaller student: the teacher answers every prompt (batched, traced, resumable: a
    killed run keeps its answers and the same command goes on), then the student is fine-tuned on the answers —
    with `--level logit` also on the teacher's top-k next-token distributions (KL mixed with cross-entropy).

    Example: fmstack train distill --teacher qwen2.5-0.5b-instruct --student smollm2-135m-instruct
    --prompts examples/train/sft/train.jsonl --out runs/distill --steps 20 --batch-size 8 --lr 1e-3
    """
    from fmstack.model.train.distill import distill as run_distill

    keep = _answer_filter(filter_spec, judge) if filter_spec else None
    with _finetune_progress() as progress:
        summary = run_distill(config, get_settings(), progress, keep)
    _print_distill(summary, config.out)


def _answer_filter(spec: str, judge: str | None):
    """The metric is checked now; models and the store open only when the answers are scored."""
    from fmstack.app.eval.answer_filter import answer_filter, parse_filter

    metric = parse_filter(spec, judge)

    def keep(items):
        from fmstack.cli.eval import Workspace

        ws = Workspace()
        try:
            return answer_filter(metric, ws.sessions, ws.generator(None, ""), ws.embed, judge)(items)
        finally:
            ws.close()

    return keep


def _print_distill(summary: dict, out: Path) -> None:
    teacher = summary["teacher"]
    if teacher:
        console.print(
            f"teacher: {teacher['answered']} answers now, {teacher['resumed']} from an earlier run, "
            f"{teacher['failed']} failed ({teacher['completion_tokens']:,} tokens in {teacher['seconds']:.0f} s)"
            + (f"; first error: {teacher['first_error']}" if teacher["first_error"] else ""),
            soft_wrap=True,
        )
    dropped = ", ".join(f"{n} {why.replace('_', ' ')}" for why, n in summary["dropped"].items() if n)
    console.print(f"{summary['train_records']} of {summary['prompts']} prompts kept" + (f" (dropped: {dropped})"
                  if dropped else ""))  # fmt: skip
    student = summary["student"]
    _print_finetune(student, out / "student")
    if student.get("eval_kl_before") is not None:
        console.print(f"held-out KL to the teacher's top-{student['top_k']}: {student['eval_kl_before']:.4f} -> "
                      f"{student['eval_kl_after']:.4f}")  # fmt: skip
    console.print(f"wrote {out / 'answers.jsonl'}, {out / 'train.jsonl'} and {out / 'summary.json'}")
