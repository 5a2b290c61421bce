"""Logit-level distillation (see `distill`): the teacher's top-k next-token logits on every assistant token,
computed once and stored, then a short accelerate loop that trains the student on KL to them mixed with the
cross-entropy on the answer. The conversations, lengths, LoRA setup, memory check and saving are `finetune`'s."""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from fmstack.core.config import Settings
from fmstack.model.train import finetune as ft
from fmstack.model.train import memory
from fmstack.model.train.base_model import resolve_checkpoint
from fmstack.model.train.configs import DistillConfig, FinetuneConfig

Targets = list[tuple[torch.Tensor, torch.Tensor]]  # per example: (logits [tokens, k] float16, ids [tokens, k] int32)


def train_on_logits(config: DistillConfig, ftc: FinetuneConfig, settings: Settings, report: ft.Progress) -> dict:
    """Teacher top-k once, then the student's KD loop; the student is saved like a fine-tune (out/student/)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import AutoConfig, AutoTokenizer

    ft.quiet_libraries()
    train_records, eval_records = ft.load_data(ftc)
    accelerator = Accelerator(gradient_accumulation_steps=ftc.grad_accum)
    torch.set_num_threads(settings.threads)
    set_seed(ftc.seed)
    report("preparing the models", 0, None, None)
    with accelerator.main_process_first():  # convert (and verify) GGUF models once, not once per process
        student = resolve_checkpoint(config.student, settings)
        teacher = resolve_checkpoint(config.teacher, settings)
    tokenizer = AutoTokenizer.from_pretrained(student)
    context = AutoConfig.from_pretrained(student).max_position_embeddings
    data = ft.prepare_examples(tokenizer, ftc, train_records, eval_records, context)
    examples = data.train + data.eval
    targets = teacher_targets(teacher, examples, config.top_k, len(tokenizer), report)
    stored = save_targets(targets, config.out / "teacher_topk.safetensors")
    free = memory.available_bytes(accelerator.device)
    model = ft.load_model(student, ftc)
    longest = max(len(e.input_ids) for e in examples)
    need = memory.estimate(model.config, *memory.count_parameters(model), ftc.batch_size, longest)
    memory.check_fits(need, accelerator.device, ft.MEMORY_ADVICE, free)
    started = time.monotonic()
    with memory.out_of_memory(ft.MEMORY_ADVICE, lambda: "while distilling"):
        result = _train(accelerator, model, tokenizer, data, targets, config, ftc, report)
    result |= {"seconds": round(time.monotonic() - started, 1), "teacher_checkpoint": str(teacher),
               "teacher_topk_bytes": stored, "top_k": config.top_k, "kd_temperature": config.kd_temperature,
               "alpha": config.alpha}  # fmt: skip
    summary = ft._summary(ftc, student, data, result, accelerator.num_processes)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        report("saving", 0, None, None)
        ft.save(accelerator.unwrap_model(model), tokenizer, ftc, summary)
        if ftc.name:
            ft._register(ftc, settings, context)
    accelerator.wait_for_everyone()
    return summary


@torch.no_grad()
def teacher_targets(checkpoint: Path, examples: list[ft.Example], k: int, vocab: int, report: ft.Progress) -> Targets:
    """The teacher's k largest logits (over the tokenizer's real tokens) at each position whose next token is an
    assistant token: what the student's distribution is compared with there."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    targets = []
    for done, example in enumerate(examples, 1):
        logits = model(input_ids=torch.tensor([example.input_ids])).logits[0, :-1, :vocab]
        values, ids = logits[torch.tensor(example.labels[1:]) != ft.IGNORE].topk(min(k, vocab), dim=-1)
        targets.append((values.half(), ids.int()))
        report("teacher logits", done, len(examples), None)
    del model  # the student trains without the teacher in memory
    return targets


def save_targets(targets: Targets, path: Path) -> int:
    """The top-k logits of every example in one safetensors file (values, ids, per-example offsets); its size."""
    from safetensors.torch import save_file

    counts = torch.tensor([0] + [len(v) for v, _ in targets]).cumsum(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"values": torch.cat([v for v, _ in targets]), "ids": torch.cat([i for _, i in targets]),
               "offsets": counts}  # fmt: skip
    tmp = path.with_name(path.name + ".partial")
    save_file(tensors, tmp)
    tmp.replace(path)
    return path.stat().st_size


def kd_losses(logits: torch.Tensor, batch: dict[str, torch.Tensor], temperature: float) -> tuple[torch.Tensor, ...]:
    """(KL(teacher_T ‖ student_T) over the teacher's top k, cross-entropy) per assistant token, averaged. The
    student's log-probabilities come from its whole vocabulary, so mass it puts outside the teacher's top k counts
    against it (the KL stays >= 0: the k probabilities of the student sum to at most 1)."""
    labels = batch["labels"][:, 1:]
    mask = labels != ft.IGNORE
    student = logits[:, :-1][mask].float()
    ce = F.cross_entropy(student, labels[mask])
    teacher = torch.log_softmax(batch["teacher_values"].float() / temperature, dim=-1)
    ours = torch.log_softmax(student / temperature, dim=-1).gather(1, batch["teacher_ids"].long())
    kl = (teacher.exp() * (teacher - ours)).sum(-1).mean()
    return kl, ce


def _batches(examples: list[ft.Example], targets: Targets, pad_id: int, size: int, shuffle: bool, seed: int):
    from torch.utils.data import DataLoader

    def collate(indices: list[int]) -> dict[str, torch.Tensor]:
        batch = ft.collate([examples[i] for i in indices], pad_id)
        batch["teacher_values"] = torch.cat([targets[i][0] for i in indices])
        batch["teacher_ids"] = torch.cat([targets[i][1] for i in indices])
        return batch

    generator = torch.Generator().manual_seed(seed)
    return DataLoader(list(range(len(examples))), batch_size=size, shuffle=shuffle, generator=generator,
                      collate_fn=collate)  # fmt: skip


def _train(accelerator, model, tokenizer, data: ft.Prepared, targets: Targets, config: DistillConfig,
           ftc: FinetuneConfig, report: ft.Progress) -> dict[str, Any]:  # fmt: skip
    """AdamW, warmup + cosine, accumulation and clipping as `finetune.train`; the loss is the KD mixture."""
    from transformers import get_scheduler

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    train_loader = _batches(data.train, targets[: len(data.train)], pad_id, ftc.batch_size, True, ftc.seed)
    eval_loader = _batches(data.eval, targets[len(data.train) :], pad_id, ftc.batch_size, False, ftc.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=ftc.lr or ft.DEFAULT_LR[ftc.method], weight_decay=0.0)
    model, optimizer, train_loader, eval_loader = accelerator.prepare(model, optimizer, train_loader, eval_loader)
    per_epoch = math.ceil(len(train_loader) / ftc.grad_accum)
    total = ftc.steps or ftc.epochs * per_epoch
    # accelerate steps a prepared scheduler once per process per optimizer step, hence the factor.
    processes = accelerator.num_processes
    warmup = round(ft.WARMUP_FRACTION * total) * processes
    scheduler = accelerator.prepare(
        get_scheduler("cosine", optimizer, num_warmup_steps=warmup, num_training_steps=total * processes)
    )
    before = evaluate(accelerator, model, eval_loader)
    t, alpha = config.kd_temperature, config.alpha
    losses, seconds, step = [], [], 0
    report("distilling", 0, total, None)
    model.train()
    started = time.perf_counter()
    while step < total:
        for batch in train_loader:
            with accelerator.accumulate(model):
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                kl, ce = kd_losses(logits, batch, t)
                loss = alpha * t * t * kl + (1 - alpha) * ce
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(params, 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            if accelerator.sync_gradients:
                step += 1
                losses.append(float(accelerator.reduce(loss.detach(), reduction="mean")))
                seconds.append(time.perf_counter() - started)
                started = time.perf_counter()
                report("distilling", step, total, losses[-1])
                if step >= total:
                    break
    after = evaluate(accelerator, model, eval_loader)
    return {
        "steps": step,
        "epochs": round(step / per_epoch, 2),
        "train_loss_first": losses[0],
        "train_loss_last": losses[-1],
        "train_losses": [round(x, 4) for x in losses],
        "eval_loss_before": before["ce"],
        "eval_loss_after": after["ce"],
        "eval_kl_before": before["kl"],
        "eval_kl_after": after["kl"],
        "seconds_per_step_median": round(statistics.median(seconds), 4),
    }


@torch.no_grad()
def evaluate(accelerator, model, loader) -> dict[str, float | None]:
    """Held-out KL to the teacher's top k at temperature 1 and cross-entropy, per assistant token."""
    if len(loader) == 0:
        return {"kl": None, "ce": None}
    model.eval()
    sums = torch.zeros(3)  # KL × tokens, cross-entropy × tokens, tokens
    for batch in loader:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        n = (batch["labels"][:, 1:] != ft.IGNORE).sum().float()
        kl, ce = kd_losses(logits, batch, 1.0)
        sums += accelerator.gather_for_metrics(torch.stack([kl * n, ce * n, n]).unsqueeze(0)).sum(0).cpu()
    model.train()
    kl, ce = (sums[:2] / sums[2].clamp(min=1)).tolist()
    return {"kl": round(kl, 5), "ce": round(ce, 5)}
