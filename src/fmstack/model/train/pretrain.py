"""Self-supervised pretraining: a Llama-architecture causal LM trained from scratch on packed BOS/EOS blocks.

Two phases. `plan_run` checks everything a user can get wrong — the blocks folder, its manifest and tokenizer, the
config against the data, the run folder, the checkpoint to resume — before any model exists. `pretrain` then runs
the loop with accelerate (model, optimizer and data loaders prepared, `accelerator.backward`, gradient
accumulation, `clip_grad_norm_`), so the same code runs on this CPU, on a GPU, or under `accelerate launch` on
many GPUs and machines.

The data order is a pure function of the seed and the position in the stream (a seeded permutation of the
training blocks per epoch), so a resumed run reads exactly the blocks the interrupted one would have read.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader, Dataset, Sampler

from fmstack.core.errors import FmstackError
from fmstack.model.data.tokenize import TextTokenizer, load_blocks, load_tokenizer
from fmstack.model.train import memory
from fmstack.model.train.checkpoint import latest_checkpoint, load_checkpoint, read_state, save_checkpoint
from fmstack.model.train.configs import (
    LoadedConfig,
    PretrainConfig,
    TrainSpec,
    check_config,
    differences,
    fingerprint,
)

Report = Callable[[str, dict[str, Any]], None]  # ("start" | "advice" | "step" | "eval" | "checkpoint", values)
MEMORY_ADVICE = (
    "Lower train.batch_size (raise train.grad_accum to keep the tokens per step), or make the model smaller "
    "(hidden_size, num_hidden_layers)."
)


def _quiet(kind: str, values: dict[str, Any]) -> None:
    return None


class PretrainError(FmstackError):
    """Data, run folder or checkpoint the user must fix before training can start."""


@dataclass
class Plan:
    """A validated run: nothing in it can fail for a reason the user could have fixed."""

    data: Path
    blocks: np.ndarray
    manifest: dict[str, Any]
    tokenizer: TextTokenizer
    vocab_size: int
    config: PretrainConfig
    out: Path
    resume_from: Path | None

    @property
    def n_val(self) -> int:
        return max(1, round(len(self.blocks) * self.config.train.val_fraction))

    @property
    def n_train(self) -> int:
        return len(self.blocks) - self.n_val

    def identity(self) -> dict[str, Any]:
        """What a checkpoint records about its run, to refuse resuming a different one."""
        return {"config": fingerprint(self.config), "data_sha256": self.manifest.get("sha256")}


@dataclass
class PretrainResult:
    summary: dict[str, Any]
    is_main_process: bool  # under `accelerate launch`, only one process reports and registers


# ---------------------------------------------------------------- validation


def plan_run(data: Path, loaded: LoadedConfig, out: Path, resume: bool = False) -> Plan:
    """Every check that needs no training, in the order a user would fix things."""
    check_config(loaded)
    blocks, manifest = _read_blocks(data)
    tokenizer = _tokenizer(data, manifest)
    vocab_size = max(manifest.get("vocab_size") or 0, tokenizer.vocab_size)
    _check_data(loaded, data, blocks, manifest, vocab_size)
    plan = Plan(data, blocks, manifest, tokenizer, vocab_size, loaded.config, out, None)
    plan.resume_from = _resume_point(plan) if resume else _fresh_run_folder(out)
    return plan


def _read_blocks(data: Path) -> tuple[np.ndarray, dict[str, Any]]:
    make = "Make it with `fmstack data run PIPELINE.yaml` (a tokenize step with pack) and pass its blocks/ folder."
    if not data.is_dir():
        raise PretrainError(f"--data {data}: no such folder. {make}")
    if not (data / "manifest.json").is_file():
        raise PretrainError(
            f"--data {data}: no manifest.json, so not packed blocks (or packing did not finish). {make}"
        )
    blocks = load_blocks(data)
    manifest = json.loads((data / "manifest.json").read_text(encoding="utf-8"))
    if len(blocks) < 2:
        raise PretrainError(
            f"{data}/manifest.json: {len(blocks)} block(s) of {manifest['block_size']} tokens; pretraining needs at "
            "least 2 (one to train on, one to validate). Pack more text or use a smaller block_size."
        )
    return blocks, manifest


def _tokenizer(data: Path, manifest: dict[str, Any]) -> TextTokenizer:
    """The tokenizer that made the blocks: one trained by the same pipeline run sits beside the blocks folder."""
    name = manifest.get("tokenizer") or ""
    spec = str(data.parent / "tokenizer") if name.startswith("tokenizer/") else name
    if not spec:
        raise PretrainError(f"{data}/manifest.json: field 'tokenizer' is empty; pack the blocks again with fmstack.")
    try:
        return load_tokenizer(spec)
    except FmstackError as exc:
        raise PretrainError(
            f"{data}/manifest.json: field 'tokenizer' names '{name}', which cannot be loaded: {exc.message}"
        ) from None


def _check_data(loaded: LoadedConfig, data: Path, blocks: np.ndarray, manifest: dict[str, Any], vocab: int) -> None:
    block_size, context = int(manifest["block_size"]), loaded.config.model.max_position_embeddings
    if block_size > context:
        raise PretrainError(
            f"{loaded.where('model', 'max_position_embeddings')}: the model's context ({context}) is shorter than "
            f"the blocks in {data} ({block_size} tokens). Raise max_position_embeddings to at least {block_size}, "
            "or pack the data with a smaller block_size."
        )
    top = int(blocks.max())
    if top >= vocab:
        raise PretrainError(
            f"{data}: token id {top} is outside the tokenizer's vocabulary of {vocab}; the blocks were packed with "
            "another tokenizer than the one their manifest names. Pack them again."
        )


def _fresh_run_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise PretrainError(f"--out {out}: is a file; give a folder for the run.")
    if (out / "checkpoints").exists() or (out / "metrics.jsonl").exists():
        raise PretrainError(
            f"--out {out}: holds a training run already. Add --resume to continue it, or give another --out."
        )


def _resume_point(plan: Plan) -> Path:
    checkpoint = latest_checkpoint(plan.out)
    if checkpoint is None:
        raise PretrainError(
            f"--resume: {plan.out} has no checkpoint to resume from (they are written every checkpoint_every "
            "steps). Run without --resume to start from scratch."
        )
    saved = read_state(checkpoint)
    changed = differences(saved["identity"], plan.identity())
    if changed:
        raise PretrainError(
            f"--resume: {checkpoint} comes from a different run ({'; '.join(changed)}). Resume with the same "
            "data, config and flags, or give another --out to start a new run."
        )
    return checkpoint


# ---------------------------------------------------------------- data


class Blocks(Dataset):
    """Rows [start, stop) of the packed blocks as int64 tensors (read from the memmap on demand)."""

    def __init__(self, blocks: np.ndarray, start: int, stop: int):
        self.blocks, self.start, self.stop = blocks, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.blocks[self.start + i].astype(np.int64))


class BlockOrder(Sampler[int]):
    """Positions [start, stop) of an endless stream in which each epoch is a permutation of the `n` training
    blocks seeded by (seed, epoch): a pure function of the seed and the position, so resuming at a step only
    needs the position."""

    def __init__(self, n: int, seed: int, start: int, stop: int):
        self.n, self.seed, self.start, self.stop = n, seed, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self) -> Iterator[int]:
        position = self.start
        while position < self.stop:
            epoch, offset = divmod(position, self.n)
            take = min(self.n - offset, self.stop - position)
            yield from np.random.default_rng([self.seed, epoch]).permutation(self.n)[offset : offset + take].tolist()
            position += take


# ---------------------------------------------------------------- model and optimizer


def llama_config(plan: Plan) -> Any:
    from transformers import LlamaConfig

    ids = plan.manifest
    pad = plan.tokenizer.pad_id
    return LlamaConfig(
        vocab_size=plan.vocab_size,
        bos_token_id=ids.get("bos_id"),
        eos_token_id=ids.get("eos_id"),
        pad_token_id=pad if pad is not None else ids.get("eos_id"),
        **plan.config.model.model_dump(),
    )


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices (linear layers, embeddings) but not norm weights or biases: shrinking a norm's gain or a bias
    towards 0 is not regularisation, it just fights the optimiser (GPT-2/nanoGPT practice)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]


def _optimizer(model: torch.nn.Module, t: TrainSpec) -> tuple[torch.optim.Optimizer, Any]:
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    optimizer = torch.optim.AdamW(param_groups(model, t.weight_decay), lr=t.lr, betas=(t.beta1, t.beta2))
    scheduler = get_cosine_with_min_lr_schedule_with_warmup(optimizer, t.warmup, t.steps, min_lr_rate=t.min_lr_ratio)
    return optimizer, scheduler


# ---------------------------------------------------------------- training


def pretrain(plan: Plan, report: Report = _quiet) -> PretrainResult:
    """Train, evaluate, checkpoint, and write the Hugging Face checkpoint, metrics, summary and loss curve."""
    from transformers import LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # "Writing model shards" bars would break through ours
    # accelerate warns on every checkpoint that the tied lm_head is saved once; it is, and it loads back tied.
    logging.getLogger("accelerate.utils.other").setLevel(logging.ERROR)
    t = plan.config.train
    accelerator = Accelerator(gradient_accumulation_steps=t.grad_accum)
    set_seed(t.seed)
    free = memory.available_bytes(accelerator.device)
    model = LlamaForCausalLM(llama_config(plan))
    block = int(plan.manifest["block_size"])
    need = memory.estimate(model.config, *memory.count_parameters(model), t.batch_size, block)
    memory.check_fits(need, accelerator.device, MEMORY_ADVICE, free)
    advice = memory.batch_advice(need, accelerator.device, free)
    optimizer, scheduler = _optimizer(model, t)
    model, optimizer = accelerator.prepare(model, optimizer)
    # Stepped by us once per optimizer step (accelerate would step a prepared scheduler once per process).
    accelerator.register_for_checkpointing(scheduler)
    fresh = {"step": 0, "data_position": 0, "train_s": 0.0, "wall_s": 0.0}
    state = _resume(accelerator, plan) if plan.resume_from else fresh
    per_step = t.batch_size * t.grad_accum * accelerator.num_processes
    order = BlockOrder(plan.n_train, t.seed, state["data_position"], t.steps * per_step)
    train_loader = DataLoader(Blocks(plan.blocks, 0, plan.n_train), batch_size=t.batch_size, sampler=order)
    val = Blocks(plan.blocks, plan.n_train, plan.n_train + min(plan.n_val, t.eval_blocks))
    train_loader, val_loader = accelerator.prepare(train_loader, DataLoader(val, batch_size=t.batch_size))
    log = _MetricsLog(plan.out / "metrics.jsonl", state.get("metrics_bytes")) if accelerator.is_main_process else None
    loop = _Loop(plan, accelerator, model, optimizer, scheduler, val_loader, log, report, state)
    if accelerator.is_main_process:
        report("start", {"step": state["step"], "steps": t.steps, "parameters": _parameters(model)})
        if advice:
            report("advice", {"message": advice})
    with memory.out_of_memory(MEMORY_ADVICE, lambda: f"at step {loop.step + 1} of {t.steps}"):
        loop.run(train_loader, per_step)
    summary = loop.finish()
    accelerator.end_training()
    return PretrainResult(summary, accelerator.is_main_process)


def _resume(accelerator: Accelerator, plan: Plan) -> dict[str, Any]:
    assert plan.resume_from is not None
    state = read_state(plan.resume_from)
    if state["processes"] != accelerator.num_processes:
        raise PretrainError(
            f"--resume: {plan.resume_from} was trained on {state['processes']} process(es), this run has "
            f"{accelerator.num_processes}; the batch per step would change. Launch it the same way."
        )
    return load_checkpoint(accelerator, plan.resume_from)


def _parameters(model: torch.nn.Module) -> int:
    """Distinct parameters (tied input and output embeddings count once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


class _MetricsLog:
    """metrics.jsonl, one JSON object per line. A resumed run first cuts it back to where its checkpoint was
    taken, so the log has each step exactly once however often the run was killed."""

    def __init__(self, path: Path, keep_bytes: int | None):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.file = path.open("ab")
        self.file.truncate(keep_bytes or 0)

    def write(self, row: dict[str, Any]) -> None:
        self.file.write((json.dumps(row) + "\n").encode())
        self.file.flush()

    def tell(self) -> int:
        return self.file.tell()

    def rows(self) -> list[dict[str, Any]]:
        self.file.flush()
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines()]

    def close(self) -> None:
        os.fsync(self.file.fileno())
        self.file.close()


class _Loop:
    """The training loop's state between steps, so that each part (step, evaluate, checkpoint) stays short."""

    def __init__(
        self,
        plan: Plan,
        accelerator: Accelerator,
        model: Any,
        optimizer: Any,
        scheduler: Any,
        val_loader: DataLoader,
        log: _MetricsLog | None,
        report: Report,
        state: dict[str, Any],
    ):
        self.plan, self.t, self.accelerator = plan, plan.config.train, accelerator
        self.model, self.optimizer, self.scheduler, self.val_loader = model, optimizer, scheduler, val_loader
        self.log, self.report = log, report
        self.step, self.train_s, self.wall_s = state["step"], state["train_s"], state["wall_s"]
        self.last_val: dict[str, Any] | None = state.get("last_val")

    def run(self, loader: DataLoader, blocks_per_step: int) -> None:
        self.blocks_per_step = blocks_per_step
        tokens_per_step = blocks_per_step * int(self.plan.manifest["block_size"])
        acc, model = self.accelerator, self.model
        model.train()
        losses: list[torch.Tensor] = []
        started = last = time.perf_counter()
        for batch in loader:
            with acc.accumulate(model):
                loss = model(input_ids=batch, labels=batch).loss
                acc.backward(loss)
                losses.append(loss.detach())
                if acc.sync_gradients:
                    grad_norm = acc.clip_grad_norm_(model.parameters(), self.t.grad_clip)
                self.optimizer.step()
                self.optimizer.zero_grad()
            if not acc.sync_gradients:
                continue
            lr = self.scheduler.get_last_lr()[0]
            self.scheduler.step()
            self.step += 1
            # Reading the loss and the norm back waits for the device to finish the step; timed before that, a
            # GPU's queued work went uncounted (12 % too many tokens/s at batch 64 on an H200).
            loss, norm = acc.reduce(torch.stack(losses).mean(), "mean").item(), float(grad_norm)
            seconds = time.perf_counter() - last
            self.train_s += seconds
            row = {
                "kind": "train",
                "step": self.step,
                "loss": loss,
                "lr": lr,
                "grad_norm": norm,
                "tokens": self.step * tokens_per_step,
                "tokens_per_s": tokens_per_step / seconds,
            }
            losses = []
            self._emit("step", row)
            self._after_step(started)
            started = last = time.perf_counter()

    def _after_step(self, started: float) -> None:
        """Evaluate and checkpoint when due; their time counts in the wall time but not in tokens/s."""
        if self.step % self.t.eval_every == 0 or self.step == self.t.steps:
            self.evaluate()
        self.wall_s += time.perf_counter() - started
        if self.t.checkpoint_every and self.step % self.t.checkpoint_every == 0 and self.step < self.t.steps:
            state = {
                "identity": self.plan.identity(),
                "processes": self.accelerator.num_processes,
                "data_position": self.step * self.blocks_per_step,  # blocks read from the seeded stream
                "train_s": self.train_s,
                "wall_s": self.wall_s,
                "last_val": self.last_val,
                "metrics_bytes": self.log.tell() if self.log else None,
            }
            path = save_checkpoint(self.accelerator, self.plan.out, self.step, state, self.t.keep_checkpoints)
            self._emit("checkpoint", {"step": self.step, "path": str(path)})

    @torch.no_grad()
    def evaluate(self) -> None:
        """Mean next-token loss over the held-out blocks (each block weighs the same: equal token counts)."""
        self.model.eval()
        losses = []
        for batch in self.val_loader:
            loss = self.model(input_ids=batch, labels=batch).loss
            losses.append(self.accelerator.gather_for_metrics(loss.repeat(len(batch))))
        self.model.train()
        value = torch.cat(losses).mean().item()
        self.last_val = {"kind": "val", "step": self.step, "val_loss": value, "val_perplexity": math.exp(value)}
        self._emit("eval", self.last_val)

    def _emit(self, kind: str, row: dict[str, Any]) -> None:
        if self.log is not None:
            if kind != "checkpoint":
                self.log.write(row)
            self.report(kind, row)

    def finish(self) -> dict[str, Any]:
        """The final checkpoint, summary and loss curve, written by the main process."""
        acc = self.accelerator
        acc.wait_for_everyone()
        if self.last_val is None or self.last_val["step"] != self.step:
            self.evaluate()
        summary: dict[str, Any] = {}
        if acc.is_main_process and self.log is not None:
            rows = self.log.rows()
            self.log.close()
            model = acc.unwrap_model(self.model)
            save_hf_checkpoint(model, self.plan)
            summary = _summary(self.plan, rows, model, self.train_s, self.wall_s, acc.num_processes)
            _write_atomic(self.plan.out / "summary.json", json.dumps(summary, indent=1) + "\n")
            plot_loss(rows, self.plan.out / "loss.png")
        acc.wait_for_everyone()
        return summary


# ---------------------------------------------------------------- outputs


def save_hf_checkpoint(model: Any, plan: Plan) -> None:
    """config.json, model.safetensors, generation_config.json and the tokenizer in the run folder, each file
    renamed into place from a temporary folder (a killed save leaves the previous files whole)."""
    from transformers import GenerationConfig

    c = model.config
    model.generation_config = GenerationConfig(
        bos_token_id=c.bos_token_id, eos_token_id=c.eos_token_id, pad_token_id=c.pad_token_id
    )
    tmp = plan.out / ".final.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    hf_tokenizer(plan).save_pretrained(tmp)
    _name_tokenizer_class(tmp / "tokenizer_config.json")
    for f in sorted(tmp.iterdir()):
        os.replace(f, plan.out / f.name)
    tmp.rmdir()


def hf_tokenizer(plan: Plan) -> Any:
    """The blocks' tokenizer as a `PreTrainedTokenizerFast` with its special tokens named, so
    `AutoTokenizer.from_pretrained(run)` works. Prompts get the BOS the model saw at the start of every document
    (a post-processor), unless the tokenizer already has its own."""
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(plan.tokenizer.backend.to_str())  # a copy: the loaded tokenizer stays as it was
    bos_id, eos_id = plan.manifest.get("bos_id"), plan.manifest.get("eos_id")
    if backend.post_processor is None and bos_id is not None:
        bos = backend.id_to_token(bos_id)
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
        )
    roles = {"bos_token": bos_id, "eos_token": eos_id, "pad_token": plan.tokenizer.pad_id}
    roles["unk_token"] = plan.tokenizer.unk_id
    named = {role: backend.id_to_token(i) for role, i in roles.items() if i is not None}
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        model_max_length=plan.config.model.max_position_embeddings,
        clean_up_tokenization_spaces=False,
        **named,
    )


def _name_tokenizer_class(path: Path) -> None:
    """transformers 5 writes its internal class name (TokenizersBackend), which 4.x and other readers (llama.cpp's
    converter) do not know; PreTrainedTokenizerFast loads the same tokenizer.json in both."""
    config = json.loads(path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    _write_atomic(path, json.dumps(config, indent=2) + "\n")


def _summary(
    plan: Plan, rows: list[dict[str, Any]], model: Any, train_s: float, wall_s: float, processes: int
) -> dict[str, Any]:
    train = [r for r in rows if r["kind"] == "train"]
    val = [r for r in rows if r["kind"] == "val"][-1]
    tokens = train[-1]["tokens"] if train else 0
    last = train[-10:]
    return {
        "steps": plan.config.train.steps,
        "parameters": _parameters(model),
        "tokens_trained": tokens,
        "epochs": round(tokens / (plan.n_train * int(plan.manifest["block_size"])), 3),
        "train_loss": sum(r["loss"] for r in last) / len(last) if last else None,
        "val_loss": val["val_loss"],
        "val_perplexity": val["val_perplexity"],
        "tokens_per_s": tokens / train_s if train_s else None,
        "train_seconds": round(train_s, 2),
        "wall_seconds": round(wall_s, 2),
        "processes": processes,
        "data": {
            "path": str(plan.data),
            "blocks": len(plan.blocks),
            "train_blocks": plan.n_train,
            "val_blocks": plan.n_val,
            "block_size": int(plan.manifest["block_size"]),
            "vocab_size": plan.vocab_size,
            "tokenizer": plan.manifest.get("tokenizer"),
            "sha256": plan.manifest.get("sha256"),
        },
        "config": plan.config.model_dump(),
    }


def plot_loss(rows: list[dict[str, Any]], path: Path) -> None:
    """Training loss per step and validation loss at each evaluation, on one chart."""
    from matplotlib.figure import Figure

    train = [r for r in rows if r["kind"] == "train"]
    val = [r for r in rows if r["kind"] == "val"]
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    ax.plot([r["step"] for r in train], [r["loss"] for r in train], lw=1, color="#4c72b0", label="train")
    ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", color="#c44e52", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("next-token loss (nats)")
    ax.grid(alpha=0.3)
    ax.legend()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
