"""Preference tuning with DPO (TRL's `DPOTrainer`): teach a model to prefer the chosen answer over the rejected one.

DPO needs a frozen reference model, the policy before training. With LoRA (the default) the reference is the same
network with its adapter switched off, so only one copy of the weights is in memory; without LoRA TRL loads a
second copy. The pairs come from `chat_data.load_preferences` (TRL's standard or conversational format, e.g. from
`fmstack data from-traces --format dpo`); every pair's length is checked against `max_length` before the model is
trained, since TRL would silently cut a long answer and train on the fragment.

The summary reports TRL's own DPO metrics before and after, on the training pairs and, given `eval_data`, on
held-out pairs (does the preference carry over to prompts it did not train on?): the mean log-probabilities of
the chosen and rejected answers, the implicit rewards (beta times the log-ratio against the reference), their
margin and how often the chosen answer wins. Before training the policy is the reference, so rewards are zero and
the loss is log 2; training should open a positive margin.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fmstack.core.config import Settings
from fmstack.core.errors import InvalidRequest
from fmstack.core.sources import Progress
from fmstack.model.train import memory
from fmstack.model.train.base_model import resolve_checkpoint
from fmstack.model.train.chat_data import ConversationalPair, PreferenceRecord, load_preferences
from fmstack.model.train.configs import DpoConfig
from fmstack.model.train.trainer_progress import quiet_libraries

MEMORY_ADVICE = "Lower --batch-size (raise --grad-accum to keep the effective batch) or --max-length, or keep LoRA on."
Preparing = Callable[[str], AbstractContextManager[Progress | None]]
METRICS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")


def train_dpo(config: DpoConfig, settings: Settings, callbacks=(), preparing: Preparing | None = None) -> dict:
    """Validate everything, train, and write model/ (merged), adapter/ (LoRA) and summary.json to `config.out`.

    `callbacks` are Trainer callbacks (a progress bar); `preparing(name)` gives a progress callback for the time
    the base model's files are joined, hashed or converted, and is closed before training starts."""
    import torch
    from accelerate import PartialState
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_config(config)
    quiet_libraries()
    splits = {"train": load_preferences(config.data)}
    if config.eval_data is not None:
        splits["held_out"] = load_held_out(config.eval_data, splits["train"])
    with (preparing or _no_bar)(config.model) as progress:
        checkpoint = resolve_checkpoint(config.model, settings, progress)
    torch.set_num_threads(settings.threads)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    lengths = {split: check_lengths(pairs, tokenizer, config) for split, pairs in splits.items()}
    free = memory.available_bytes(PartialState().device)
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    peft_config = lora_config(model, config) if config.lora else None
    memory.check_fits(_memory_needed(model, config, max(max(n) for n in lengths.values())),
                      PartialState().device, MEMORY_ADVICE, free)  # fmt: skip
    trainer = _trainer(model, tokenizer, splits, peft_config, config, callbacks)
    before = _evaluate(trainer, splits)
    started = time.perf_counter()
    with memory.out_of_memory(MEMORY_ADVICE, lambda: f"at step {trainer.state.global_step + 1}"):
        trainer.train()
    seconds = time.perf_counter() - started
    after = _evaluate(trainer, splits)
    summary = {
        "base_model": config.model,
        "checkpoint": str(checkpoint),
        "pairs": {split: len(split_pairs) for split, split_pairs in splits.items()},
        "format": "conversational" if isinstance(splits["train"][0], ConversationalPair) else "standard",
        "longest_pair_tokens": max(max(n) for n in lengths.values()),
        "steps": trainer.state.global_step,
        "processes": trainer.accelerator.num_processes,
        "train_seconds": round(seconds, 1),
        "config": {**asdict(config), "lr": config.learning_rate},
        "before": before,
        "after": after,
        "adapter": "adapter" if config.lora else None,
        "model": "model",
    }
    if trainer.accelerator.is_main_process:
        _save(trainer, tokenizer, config, summary)
        if config.name:
            _register(config, settings, model.config.max_position_embeddings)
    return summary


def _no_bar(_name: str) -> AbstractContextManager[None]:
    return nullcontext()


def check_config(config: DpoConfig) -> None:
    """Option errors, before any file is read."""
    positive = {
        "--beta": config.beta,
        "--epochs": config.epochs,
        "--batch-size": config.batch_size,
        "--grad-accum": config.grad_accum,
        "--max-length": config.max_length,
        "--lora-r": config.lora_r,
        "--lora-alpha": config.lora_alpha,
    }
    for flag, value in {**positive, "--steps": config.steps, "--lr": config.lr}.items():
        if value is not None and value <= 0:
            raise InvalidRequest(f"{flag} is {value}; it must be greater than 0.")
    if config.lora and not config.target_modules:
        raise InvalidRequest("--target-modules is empty; name at least one linear module, e.g. q_proj,v_proj.")
    for path in (config.data, config.eval_data):
        if path is not None and not path.is_file():
            raise InvalidRequest(f"{path}: no such file; give a JSONL file of prompt/chosen/rejected pairs.")
    if config.out.exists() and (not config.out.is_dir() or any(config.out.iterdir())):
        raise InvalidRequest(f"{config.out} already exists and is not empty; choose a new --out folder.")


def load_held_out(path: Path, train: list[PreferenceRecord]) -> list[PreferenceRecord]:
    """Held-out pairs, in the training pairs' format (one dataset layout for TRL)."""
    pairs = load_preferences(path)
    if type(pairs[0]) is not type(train[0]):
        raise InvalidRequest(
            f"{path}:{pairs[0].line}: prompt: the held-out pairs are in the other format than the training pairs "
            "(strings vs message lists); write both files in one format."
        )
    return pairs


def check_lengths(pairs: list[PreferenceRecord], tokenizer: Any, config: DpoConfig) -> list[int]:
    """Tokens of prompt + the longer answer per pair, rendered as TRL will; a pair over max_length is an error."""
    lengths = []
    for pair in pairs:
        record = pair.to_trl()
        longest = max(_tokens(tokenizer, record["prompt"], record[side]) for side in ("chosen", "rejected"))
        if longest > config.max_length:
            raise InvalidRequest(
                f"{config.data}:{pair.line}: the prompt and its longer answer are {longest} tokens, over --max-length "
                f"{config.max_length}; shorten the pair or raise --max-length (TRL would cut the answer silently)."
            )
        lengths.append(longest)
    return lengths


def _memory_needed(model: Any, config: DpoConfig, longest: int) -> memory.Estimate:
    """Each step runs the chosen and the rejected answers of a batch together. Without LoRA, TRL keeps a frozen
    copy of the model as the reference; with it, the reference is the same weights with the adapter off."""
    import torch

    parameters, _ = memory.count_parameters(model)
    if config.lora:
        trainable = sum(
            config.lora_r * (m.in_features + m.out_features)
            for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in config.target_modules
        )
        return memory.estimate(model.config, parameters + trainable, trainable, 2 * config.batch_size, longest)
    return memory.estimate(model.config, 2 * parameters, parameters, 2 * config.batch_size, longest)


def lora_config(model: Any, config: DpoConfig) -> Any:
    """LoRA on `target_modules`, after checking the model has them (PEFT's own error comes mid-setup)."""
    from peft import LoraConfig

    from fmstack.model.train.finetune import linear_module_names

    available = linear_module_names(model)
    if missing := [m for m in config.target_modules if m not in available]:
        raise InvalidRequest(
            f"--target-modules: {', '.join(missing)} not in the model; its linear modules are "
            f"{', '.join(sorted(available))}."
        )
    return LoraConfig(
        task_type="CAUSAL_LM", r=config.lora_r, lora_alpha=config.lora_alpha, target_modules=list(config.target_modules)
    )


def _tokens(tokenizer: Any, prompt: str | list[dict], answer: str | list[dict]) -> int:
    if isinstance(prompt, str):
        return len(tokenizer(prompt + answer, add_special_tokens=False).input_ids) + 1  # TRL appends EOS
    return len(tokenizer.apply_chat_template(prompt + answer, tokenize=True, return_dict=True)["input_ids"])


def _trainer(model: Any, tokenizer: Any, splits: dict[str, list], peft_config: Any, config: DpoConfig, callbacks):
    import torch
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import DPOConfig, DPOTrainer

    data = {split: Dataset.from_list([p.to_trl() for p in pairs]) for split, pairs in splits.items()}
    args = DPOConfig(
        output_dir=str(config.out.with_name(f".{config.out.name}.trainer")),
        beta=config.beta,
        learning_rate=config.learning_rate,
        num_train_epochs=config.epochs,
        max_steps=config.steps or -1,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=max(config.batch_size, 8),
        gradient_accumulation_steps=config.grad_accum,
        max_length=config.max_length,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_pin_memory=torch.cuda.is_available(),  # pinning is for GPU copies; on CPU it only warns
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),  # TRL's default; unsupported on CPU
        seed=config.seed,
    )
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=data["train"],
        eval_dataset=data,  # scored before and after: the training pairs themselves, and held-out pairs if any
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=list(callbacks),
    )
    trainer.remove_callback(PrinterCallback)  # it prints every log dict when tqdm is off
    return trainer


def _evaluate(trainer: Any, splits: dict[str, list]) -> dict[str, dict[str, float]]:
    """Per split, TRL's DPO metrics (without the eval_ prefix) and the chosen-minus-rejected log-prob margin. One
    split per call: TRL logs its metrics as eval_* whatever the split, so a dict of splits would mix them up."""
    scores = {}
    for split in splits:
        evaluation = trainer.evaluate(eval_dataset=split)
        picked = {key: evaluation[f"eval_{key}"] for key in (*METRICS, "logps/chosen", "logps/rejected")}
        picked["logps/margin"] = picked["logps/chosen"] - picked["logps/rejected"]
        scores[split] = picked
    return scores


def _save(trainer: Any, tokenizer: Any, config: DpoConfig, summary: dict) -> None:
    """adapter/ (PEFT), model/ (merged, servable) and summary.json, written to a temp folder then renamed."""
    tmp = config.out.with_name(f".{config.out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model = trainer.model
    if config.lora:
        model.save_pretrained(tmp / "adapter")
        tokenizer.save_pretrained(tmp / "adapter")
        model = model.merge_and_unload()
    model.save_pretrained(tmp / "model", safe_serialization=True)
    tokenizer.save_pretrained(tmp / "model")
    (tmp / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")  # paths as text
    shutil.rmtree(trainer.args.output_dir, ignore_errors=True)
    if config.out.exists():
        config.out.rmdir()  # check_config allowed only an empty folder
    tmp.rename(config.out)


def _register(config: DpoConfig, settings: Settings, context: int) -> None:
    from fmstack.core.registry import register_user_model

    register_user_model(
        settings,
        config.name,
        engine="transformers",
        source=f"path:{(config.out / 'model').resolve()}",
        context_length=context,
        description=f"{config.model} preference-tuned (DPO, {'lora' if config.lora else 'full'}) on {config.data.name}",
    )
