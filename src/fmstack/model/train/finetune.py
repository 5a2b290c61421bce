"""Supervised fine-tuning (LoRA through PEFT, or full) of a causal language model on chat-format data.

Everything a user can get wrong is checked before the first step, in order of cost: the options, the data files
(`chat_data.load_sft`), the model (`base_model.resolve_checkpoint`), the tokenized lengths and the LoRA target
modules. Training is a short loop on `accelerate.Accelerator`, so the same code runs on this CPU and under
`accelerate launch` on many GPUs or machines.

The loss covers assistant tokens only: each assistant turn's span is found by rendering the chat template on the
conversation's prefixes (up to the turn with the generation prompt, and through the turn), which works for any
template that renders prefixes consistently, without knowing its markers. The span includes the end-of-turn token
(so the model learns to stop) but not the whitespace the template puts after it.

A sequence longer than `max_length` is an error by default (a silently cut answer teaches the model to stop
mid-sentence); `truncate=True` cuts such sequences at `max_length` instead and drops those left with no assistant
token. Both counts go in `summary.json`.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from fmstack.core.config import Settings
from fmstack.core.errors import InvalidRequest
from fmstack.model.train import memory
from fmstack.model.train.base_model import resolve_checkpoint
from fmstack.model.train.chat_data import SftRecord, load_sft
from fmstack.model.train.configs import FinetuneConfig
from fmstack.model.train.trainer_progress import quiet_libraries

METHODS = ("lora", "full")
DEFAULT_LR = {"lora": 2e-4, "full": 2e-5}
WARMUP_FRACTION = 0.05
IGNORE = -100  # label of tokens that carry no loss (the ignore_index of PyTorch's cross-entropy)
MEMORY_ADVICE = (
    "Lower --batch-size (raise --grad-accum to keep the effective batch), cut long conversations with "
    "--max-length and --truncate, or use --method lora."
)

# stage, done, total (None: unknown), last training loss (None outside training)
Progress = Callable[[str, int, int | None, float | None], None]


@dataclass
class Example:
    """A tokenized conversation: ids and labels (IGNORE outside assistant spans)."""

    input_ids: list[int]
    labels: list[int]
    line: int = 0


@dataclass
class Prepared:
    train: list[Example]
    eval: list[Example]
    truncated: int = 0
    dropped: int = 0


def finetune(config: FinetuneConfig, settings: Settings, progress: Progress | None = None) -> dict:
    """Validate, train, save; returns the summary that is also written to `out/summary.json`."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import AutoConfig, AutoTokenizer

    check_config(config)
    quiet_libraries()  # fmstack's own bars say what is happening; the conversion's and loaders' would interleave
    train_records, eval_records = load_data(config)
    accelerator = Accelerator(gradient_accumulation_steps=config.grad_accum)
    report = progress if (progress and accelerator.is_main_process) else _silent
    torch.set_num_threads(settings.threads)
    set_seed(config.seed)
    report("preparing the base model", 0, None, None)
    with accelerator.main_process_first():  # convert (and verify) a GGUF once, not once per process
        checkpoint = resolve_checkpoint(config.model, settings)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    if not tokenizer.chat_template:
        raise InvalidRequest(f"'{config.model}' has no chat template; SFT on `messages` needs one.")
    context = AutoConfig.from_pretrained(checkpoint).max_position_embeddings
    data = prepare_examples(tokenizer, config, train_records, eval_records, context)
    free = memory.available_bytes(accelerator.device)  # before the model takes its share
    model = load_model(checkpoint, config)
    longest = max(len(e.input_ids) for e in data.train + data.eval)
    need = memory.estimate(model.config, *memory.count_parameters(model), config.batch_size, longest)
    memory.check_fits(need, accelerator.device, MEMORY_ADVICE, free)
    where = {"stage": "training", "done": 0, "total": None}

    def tracked(stage: str, done: int, total: int | None, loss: float | None) -> None:
        where.update(stage=stage, done=done, total=total)
        report(stage, done, total, loss)

    started = time.monotonic()
    with memory.out_of_memory(MEMORY_ADVICE, lambda: "during {stage} ({done} of {total})".format(**where)):
        result = train(accelerator, model, tokenizer, data, config, tracked)
    result["seconds"] = round(time.monotonic() - started, 1)
    summary = _summary(config, checkpoint, data, result, accelerator.num_processes)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        report("saving", 0, None, None)
        save(accelerator.unwrap_model(model), tokenizer, config, summary)
        if config.name:
            _register(config, settings, context)
    accelerator.wait_for_everyone()
    return summary


def _silent(*_: Any) -> None:
    """The progress callback of processes other than the main one."""


def check_config(config: FinetuneConfig) -> None:
    """Option errors, before any file is read."""
    positive = {
        "--epochs": config.epochs,
        "--batch-size": config.batch_size,
        "--grad-accum": config.grad_accum,
        "--lora-r": config.lora_r,
        "--lora-alpha": config.lora_alpha,
    }
    optional_positive = {"--steps": config.steps, "--max-length": config.max_length, "--lr": config.lr}
    if config.method not in METHODS:
        raise InvalidRequest(f"--method is '{config.method}'; use lora or full.")
    for flag, value in {**positive, **optional_positive}.items():
        if value is not None and value <= 0:
            raise InvalidRequest(f"{flag} is {value}; it must be greater than 0.")
    if not 0 <= config.eval_split < 1:
        raise InvalidRequest(f"--eval-split is {config.eval_split}; use a fraction in [0, 1).")
    if not 0 <= config.lora_dropout < 1:
        raise InvalidRequest(f"--lora-dropout is {config.lora_dropout}; use a probability in [0, 1).")
    if config.method == "lora" and not config.target_modules:
        raise InvalidRequest("--target-modules is empty; name at least one linear module, e.g. q_proj,v_proj.")
    for path in (config.data, config.eval_data):
        if path is not None and not path.is_file():
            raise InvalidRequest(f"{path}: no such file; give a JSONL or JSON file of chat `messages`.")
    if config.out.exists() and (not config.out.is_dir() or any(config.out.iterdir())):
        raise InvalidRequest(f"{config.out} already exists and is not empty; choose a new --out folder.")


def load_data(config: FinetuneConfig) -> tuple[list[SftRecord], list[SftRecord]]:
    """Training and held-out records: `eval_data` when given, else a seeded `eval_split` of `data`."""
    records = load_sft(config.data)
    if config.eval_data is not None:
        return records, load_sft(config.eval_data)
    held_out = max(1, round(len(records) * config.eval_split)) if config.eval_split and len(records) > 1 else 0
    order = list(range(len(records)))
    random.Random(config.seed).shuffle(order)
    return [records[i] for i in order[held_out:]], [records[i] for i in sorted(order[:held_out])]


def encode_chat(tokenizer: Any, messages: list[dict[str, str]], line: int = 0) -> Example:
    """Token ids of the rendered conversation and labels that keep only the assistant spans."""
    where = f"line {line}: " if line else ""
    text = _render(tokenizer, messages, False, where)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], True, where) if i else None
        through = _render(tokenizer, messages[: i + 1], False, where)
        if before is None or not (text.startswith(before) and text.startswith(through)) or len(through) < len(before):
            raise InvalidRequest(
                f"{where}the model's chat template does not render this conversation's turns as prefixes of "
                "the whole (does it start with an assistant turn?), so the assistant tokens cannot be located."
            )
        spans.append((len(before), max(len(before), len(through.rstrip()))))
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    labels = [
        token if any(start <= begin < end for start, end in spans) else IGNORE
        for token, (begin, _) in zip(encoded.input_ids, encoded.offset_mapping, strict=True)
    ]
    return Example(list(encoded.input_ids), labels, line)


def _render(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool, where: str) -> str:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    except Exception as exc:  # the template's own raise_exception, e.g. roles that must alternate
        raise InvalidRequest(f"{where}the model's chat template rejected the conversation: {exc}") from exc


def prepare_examples(
    tokenizer: Any,
    config: FinetuneConfig,
    train_records: list[SftRecord],
    eval_records: list[SftRecord],
    context: int,
) -> Prepared:
    """Tokenize both splits and apply the length policy (fail, or truncate with --truncate)."""
    limit = config.max_length or context
    if limit > context:
        raise InvalidRequest(f"--max-length {limit} is longer than the model's context ({context} tokens).")
    train = [encode_chat(tokenizer, _plain(r), r.line) for r in train_records]
    held_out = [encode_chat(tokenizer, _plain(r), r.line) for r in eval_records]
    files = {config.data: train, config.eval_data: held_out} if config.eval_data else {config.data: train + held_out}
    for path, examples in files.items():
        too_long = [e for e in examples if len(e.input_ids) > limit]
        if too_long and not config.truncate:
            longest = max(len(e.input_ids) for e in too_long)
            raise InvalidRequest(
                f"{path}:{min(e.line for e in too_long)}: {len(too_long)} of {len(examples)} conversations are "
                f"longer than {limit} tokens (the longest has {longest}); raise --max-length (the model's context "
                f"is {context}), shorten them, or pass --truncate to cut them."
            )
    prepared = Prepared([], [])
    for examples, into in ((train, prepared.train), (held_out, prepared.eval)):
        for example in examples:
            if len(example.input_ids) > limit:
                prepared.truncated += 1
                example = Example(example.input_ids[:limit], example.labels[:limit], example.line)
            if all(label == IGNORE for label in example.labels):
                prepared.dropped += 1
                continue
            into.append(example)
    if not prepared.train:
        raise InvalidRequest(f"{config.data}: no training conversation has an assistant token left to learn from.")
    return prepared


def _plain(record: SftRecord) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in record.messages]


def load_model(checkpoint: Path, config: FinetuneConfig) -> Any:
    """The base model, wrapped in LoRA adapters for method lora (after checking the target modules exist)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    if config.method == "full":
        return model
    available = linear_module_names(model)
    if missing := [m for m in config.target_modules if m not in available]:
        raise InvalidRequest(
            f"--target-modules: {', '.join(missing)} not in the model; its linear modules are "
            f"{', '.join(sorted(available))}."
        )
    lora = LoraConfig(
        task_type="CAUSAL_LM",
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules),
    )
    return get_peft_model(model, lora)


def linear_module_names(model: torch.nn.Module) -> set[str]:
    """Last name components of the model's linear layers: what LoRA's target_modules match."""
    return {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch; padding is masked from attention and loss."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def train(accelerator: Any, model: Any, tokenizer: Any, data: Prepared, config: FinetuneConfig, report: Progress):
    """The loop: AdamW, warmup + cosine schedule, gradient accumulation and clipping; eval loss before and after."""
    from torch.utils.data import DataLoader
    from transformers import get_scheduler

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def loader(examples: list[Example], shuffle: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(config.seed)
        return DataLoader(
            examples,
            batch_size=config.batch_size,
            shuffle=shuffle,
            generator=generator,
            collate_fn=lambda batch: collate(batch, pad_id),
        )

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr or DEFAULT_LR[config.method], weight_decay=0.0)
    train_loader, eval_loader = loader(data.train, True), loader(data.eval, False)
    model, optimizer, train_loader, eval_loader = accelerator.prepare(model, optimizer, train_loader, eval_loader)
    per_epoch = math.ceil(len(train_loader) / config.grad_accum)
    total = config.steps or config.epochs * per_epoch
    # accelerate steps a prepared scheduler once per process per optimizer step, hence the factor.
    scheduler = get_scheduler(
        "cosine",
        optimizer,
        num_warmup_steps=round(WARMUP_FRACTION * total) * accelerator.num_processes,
        num_training_steps=total * accelerator.num_processes,
    )
    scheduler = accelerator.prepare(scheduler)
    eval_before = evaluate(accelerator, model, eval_loader, report, "eval loss before")
    losses, step_seconds, step, tokens = [], [], 0, 0
    report("training", 0, total, None)
    model.train()
    step_started = time.perf_counter()
    while step < total:
        for batch in train_loader:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(params, 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            tokens += int(batch["attention_mask"].sum())
            if accelerator.sync_gradients:
                step += 1
                losses.append(float(accelerator.reduce(loss.detach(), reduction="mean")))
                step_seconds.append(time.perf_counter() - step_started)
                step_started = time.perf_counter()
                report("training", step, total, losses[-1])
                if step >= total:
                    break
    eval_after = evaluate(accelerator, model, eval_loader, report, "eval loss after")
    return {
        "steps": step,
        "epochs": round(step / per_epoch, 2),
        "train_loss_first": losses[0],
        "train_loss_last": losses[-1],
        "train_losses": [round(x, 4) for x in losses],
        "eval_loss_before": eval_before,
        "eval_loss_after": eval_after,
        "train_tokens_per_process": tokens,
        "seconds_per_step_median": round(statistics.median(step_seconds), 4),
    }


@torch.no_grad()
def evaluate(accelerator: Any, model: Any, loader: Any, report: Progress, stage: str) -> float | None:
    """Mean loss per assistant token over the held-out set, on all processes (None without held-out data)."""
    if len(loader) == 0:
        return None
    model.eval()
    total_loss, total_tokens = 0.0, 0
    for done, batch in enumerate(loader, 1):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        labels = batch["labels"][:, 1:]
        per_token = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2).float(), labels, ignore_index=IGNORE, reduction="none"
        )
        sums, counts = accelerator.gather_for_metrics((per_token.sum(1), (labels != IGNORE).sum(1)))
        total_loss += float(sums.sum())
        total_tokens += int(counts.sum())
        report(stage, done, len(loader), None)
    model.train()
    return round(total_loss / max(total_tokens, 1), 4)


def _summary(config: FinetuneConfig, checkpoint: Path, data: Prepared, result: dict, processes: int) -> dict:
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}
    settings["target_modules"] = list(config.target_modules)
    settings["lr"] = config.lr or DEFAULT_LR[config.method]
    return {
        "config": settings,
        "base_checkpoint": str(checkpoint),
        "train_examples": len(data.train),
        "eval_examples": len(data.eval),
        "truncated": data.truncated,
        "dropped": data.dropped,
        "processes": processes,
        **result,
        "adapter": "adapter" if config.method == "lora" else None,
        "model": "model" if _writes_merged(config) else None,
    }


def _writes_merged(config: FinetuneConfig) -> bool:
    return config.method == "full" or config.merge or config.name is not None


def save(model: Any, tokenizer: Any, config: FinetuneConfig, summary: dict) -> None:
    """adapter/ (PEFT), model/ (merged, servable) and summary.json, written to a temp folder then renamed."""
    tmp = config.out.with_name(f".{config.out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if config.method == "lora":
        model.save_pretrained(tmp / "adapter")
        tokenizer.save_pretrained(tmp / "adapter")
    if _writes_merged(config):
        merged = model.merge_and_unload() if config.method == "lora" else model
        merged.save_pretrained(tmp / "model", safe_serialization=True)
        tokenizer.save_pretrained(tmp / "model")
    (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if config.out.exists():
        config.out.rmdir()  # check_config allowed only an empty folder
    tmp.rename(config.out)


def _register(config: FinetuneConfig, settings: Settings, context: int) -> None:
    from fmstack.core.registry import register_user_model

    register_user_model(
        settings,
        config.name,
        engine="transformers",
        source=f"path:{(config.out / 'model').resolve()}",
        context_length=context,
        description=f"{config.model} fine-tuned ({config.method}) on {config.data.name}",
    )
