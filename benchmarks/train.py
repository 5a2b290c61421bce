"""Training benchmark: fmstack's training commands against plain library code doing the same steps.

Sections (each a function returning rows; run all, or some with --only):

- pretrain: `fmstack train pretrain` (accelerate loop, checkpoint-free, one evaluation at the end) against a plain
  PyTorch + transformers loop written the obvious way — the same `LlamaForCausalLM` config and seed, on the same
  device (the one accelerate picks for fmstack: a GPU when there is one), the same packed blocks (the Python
  language reference's topics, which ship with every CPython in `pydoc_data`, and a byte-level BPE trained on them),
  batch, sequence length, AdamW, warmup + cosine schedule, gradient clipping and number of steps. Throughput is the
  median of per-step tokens/s after the first two steps (steps only: no start-up, evaluation or saving), each step
  timed after the loss is read back (which waits for the GPU); the wall time of each whole process is reported
  beside it. Goal: fmstack within 5 % of the plain loop.
- lora: `fmstack train finetune --method lora` on SmolLM2 (converted from its GGUF once) against a plain
  transformers + PEFT loop on the same tokenized conversations (the SFT example's training file), LoRA config
  (r 8, alpha 16, q_proj/v_proj), batch size, AdamW, warmup + cosine schedule and clipping, on the same device:
  median seconds per optimizer step (forward, backward, step; fmstack's includes its data loader and accelerate's
  wrapping). Goal: fmstack within 5 % of the plain loop.
- export: SmolLM2 exported by `fmstack model export` at f16, q8_0 and q4_k_m, and the packaged Q4_1 GGUF as the
  reference: file size, export time and llama.cpp greedy decode tokens/s (128 tokens after a fixed prompt, prompt
  processing not timed, median of three after a warm-up).

Each target runs in its own process with the same thread settings, one after the other.

    .venv/bin/python benchmarks/train.py                 # every section (pretrain: the small preset, 20 steps)
    .venv/bin/python benchmarks/train.py --quick         # smoke run: the tiny preset
    .venv/bin/python benchmarks/train.py --only pretrain

Writes results/train.json (sections run now replace their own entry; others are kept) and results/train.png.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


# ---------------------------------------------------------------- pretrain


def pretrain(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    """fmstack train pretrain vs a plain PyTorch + transformers loop: tokens/s on identical steps."""
    preset, steps = ("tiny", 20) if args.quick else ("small", 20)
    block, vocab = (64, 1000) if args.quick else (256, 8000)
    blocks = _pretrain_blocks(work / "data", block, vocab)
    rows = []
    for target in ("plain", "fmstack"):
        result, wall_s = _run_worker(target, work, "--blocks", str(blocks), "--preset", preset, "--steps", str(steps))
        rows.append(
            {
                "section": "pretrain",
                "target": "plain PyTorch + transformers" if target == "plain" else "fmstack train pretrain",
                "metric": "tokens/s",
                "value": result["tokens_per_s"],
                "steps": steps,
                "preset": preset,
                "block_size": block,
                "batch_size": result["batch_size"],
                "parameters": result["parameters"],
                "final_loss": result["final_loss"],
                "process_wall_s": wall_s,
            }
        )
    rows[1]["vs_plain"] = rows[1]["value"] / rows[0]["value"]
    return rows


def _run_worker(target: str, work: Path, *flags: str) -> tuple[dict[str, Any], float]:
    """One target in a process of its own: the JSON it prints last, and the process's wall time in seconds."""
    cmd = [sys.executable, __file__, "--worker", target, "--work", str(work / target), *flags]
    started = time.perf_counter()
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1]), round(time.perf_counter() - started, 1)


def _pretrain_blocks(out: Path, block_size: int, vocab_size: int) -> Path:
    """English text that ships with Python itself (the language reference's topics, 465k characters: no test
    extra needed), a BPE trained on it, packed into blocks."""
    from pydoc_data.topics import topics

    from fmstack.model.data import tokenize as tk

    texts = [topics[name] for name in sorted(topics)]
    tk.save_tokenizer(tk.train_bpe(texts, vocab_size=vocab_size), out / "tokenizer")
    tok = tk.load_tokenizer(out / "tokenizer")
    tk.pack_blocks(tk.encode_stream(tok, texts), block_size, tok.bos_id, tok.eos_id, out / "blocks",
                   vocab_size=tok.vocab_size, tokenizer="tokenizer/ (trained by this run)")  # fmt: skip
    return out / "blocks"


def worker_fmstack(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.work)
    cmd = [sys.executable, "-m", "fmstack", "train", "pretrain", "--data", args.blocks, "--config", args.preset,
           "--out", str(out), "--steps", str(args.steps), "--warmup", "2", "--eval-every", str(args.steps),
           "--checkpoint-every", "0"]  # fmt: skip
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["kind"] == "train"]
    summary = json.loads((out / "summary.json").read_text())
    return {
        "tokens_per_s": _median([r["tokens_per_s"] for r in train[2:]]),
        "final_loss": train[-1]["loss"],
        "parameters": summary["parameters"],
        "batch_size": summary["config"]["train"]["batch_size"],
    }


def device() -> Any:
    """The device fmstack's accelerate loop trains on (a GPU when there is one): the plain loops use it too."""
    from accelerate import PartialState

    return PartialState().device


def worker_plain(args: argparse.Namespace) -> dict[str, Any]:
    """What a user would write with transformers and PyTorch alone, on the same model, data and device."""
    import numpy as np
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, get_cosine_with_min_lr_schedule_with_warmup

    from fmstack.model.data.tokenize import load_blocks
    from fmstack.model.train.configs import PRESETS, PretrainConfig

    config = PretrainConfig.model_validate(PRESETS[args.preset])
    t = config.train
    blocks = load_blocks(args.blocks)
    manifest = json.loads((Path(args.blocks) / "manifest.json").read_text())
    n_train = len(blocks) - max(1, round(len(blocks) * t.val_fraction))
    torch.manual_seed(t.seed)
    model = LlamaForCausalLM(
        LlamaConfig(vocab_size=manifest["vocab_size"], bos_token_id=0, eos_token_id=1, **config.model.model_dump())
    ).to(device())
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, betas=(t.beta1, t.beta2), weight_decay=t.weight_decay)
    scheduler = get_cosine_with_min_lr_schedule_with_warmup(optimizer, 2, args.steps, min_lr_rate=t.min_lr_ratio)
    order = np.random.default_rng(t.seed).permutation(n_train)
    speeds, loss = [], None
    model.train()
    for step in range(args.steps):
        started = time.perf_counter()
        rows = order[(step * t.batch_size) % n_train :][: t.batch_size]
        batch = torch.from_numpy(blocks[np.sort(rows)].astype(np.int64)).to(model.device)
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        loss = loss.item()  # waits for the device, so the step is timed whole
        speeds.append(batch.numel() / (time.perf_counter() - started))
    return {
        "tokens_per_s": _median(speeds[2:]),
        "final_loss": loss,
        "parameters": sum(p.numel() for p in {id(p): p for p in model.parameters()}.values()),
        "batch_size": t.batch_size,
    }


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


# ---------------------------------------------------------------- lora

LORA_DATA = HERE.parent / "examples" / "train" / "sft" / "train.jsonl"
LORA_BATCH = 4


def lora(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    """fmstack train finetune --method lora vs a plain transformers + PEFT loop: seconds per optimizer step."""
    from fmstack.core.config import get_settings
    from fmstack.model.train.base_model import resolve_checkpoint

    checkpoint = resolve_checkpoint("smollm2-135m-instruct", get_settings())  # converted once, cached
    steps = 6 if args.quick else 30
    rows = []
    for target in ("lora-plain", "lora-fmstack"):
        result, wall_s = _run_worker(target, work, "--model", str(checkpoint), "--steps", str(steps))
        rows.append(
            {
                "section": "lora",
                "target": "plain transformers + PEFT" if target == "lora-plain" else "fmstack train finetune",
                "metric": "s/step",
                "value": result["seconds_per_step"],
                "steps": steps,
                "batch_size": LORA_BATCH,
                "final_loss": result["final_loss"],
                "process_wall_s": wall_s,
            }
        )
    rows[1]["vs_plain"] = rows[1]["value"] / rows[0]["value"]
    return rows


def worker_lora_fmstack(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.work)
    cmd = [sys.executable, "-m", "fmstack", "train", "finetune", "--model", args.model, "--data", str(LORA_DATA),
           "--out", str(out), "--steps", str(args.steps), "--batch-size", str(LORA_BATCH)]  # fmt: skip
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    summary = json.loads((out / "summary.json").read_text())
    return {"seconds_per_step": summary["seconds_per_step_median"], "final_loss": summary["train_loss_last"]}


def worker_lora_plain(args: argparse.Namespace) -> dict[str, Any]:
    """What a user would write with transformers and PEFT alone: the same tokenized conversations (fmstack's
    assistant-only labels, so both compute the same loss), LoRA config, optimizer and schedule, and the same
    batches (a shuffling DataLoader with the same seeded generator). Timed like fmstack's loop: from the end of
    one optimizer step to the end of the next, so loading the batch counts on both sides."""
    import torch
    from peft import LoraConfig, get_peft_model
    from torch.utils.data import DataLoader
    from transformers import AutoModelForCausalLM, AutoTokenizer, get_scheduler

    from fmstack.core.config import get_settings
    from fmstack.model.train import finetune as ft

    config = ft.FinetuneConfig(model=args.model, data=LORA_DATA, out=Path(args.work), steps=args.steps,
                               batch_size=LORA_BATCH)  # fmt: skip
    torch.set_num_threads(get_settings().threads)
    torch.manual_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    train_records, eval_records = ft.load_data(config)
    data = ft.prepare_examples(tokenizer, config, train_records, eval_records, 8192)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).to(device())
    model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=config.lora_r, lora_alpha=config.lora_alpha,
                                             lora_dropout=config.lora_dropout,
                                             target_modules=list(config.target_modules)))  # fmt: skip
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=ft.DEFAULT_LR["lora"], weight_decay=0.0)
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=round(ft.WARMUP_FRACTION * args.steps),
                              num_training_steps=args.steps)  # fmt: skip
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    loader = DataLoader(data.train, batch_size=LORA_BATCH, shuffle=True, collate_fn=lambda b: ft.collate(b, pad),
                        generator=torch.Generator().manual_seed(config.seed))  # fmt: skip
    batches = itertools.islice(itertools.chain.from_iterable(itertools.repeat(loader)), args.steps)
    seconds, loss = [], None
    model.train()
    started = time.perf_counter()
    for batch in batches:
        loss = model(**{k: v.to(model.device) for k, v in batch.items()}).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        loss = loss.item()
        seconds.append(time.perf_counter() - started)
        started = time.perf_counter()
    return {"seconds_per_step": _median(seconds), "final_loss": loss}


# ---------------------------------------------------------------- export

DECODE_PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


def export(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    """SmolLM2 (converted to Hugging Face) exported by `fmstack model export` at f16, q8_0 and q4_k_m, against the
    packaged Q4_1 GGUF: file size and llama.cpp greedy decode tokens/s on a fixed prompt."""
    from fmstack.core.config import get_settings
    from fmstack.core.registry import Registry
    from fmstack.model.convert import gguf_to_hf
    from fmstack.model.export.gguf import export_gguf

    settings = get_settings()
    packaged = Registry(settings).get("smollm2-135m-instruct").local_path(settings)
    checkpoint = gguf_to_hf(packaged, work / "hf")
    tokens = 32 if args.quick else 128
    rows = [_decode_row("packaged Q4_1 (reference)", packaged, tokens, None)]
    for quant in ("f16", "q8_0", "q4_k_m"):
        started = time.perf_counter()
        exported = export_gguf(checkpoint, work / f"smollm2.{quant}.gguf", quant, "smollm2-export")
        rows.append(_decode_row(f"fmstack export {quant}", exported.path, tokens, time.perf_counter() - started))
        print(f"  {quant}: {rows[-1]['size_mb']} MB, {rows[-1]['value']:.1f} tokens/s", file=sys.stderr)
    return rows


def _decode_row(target: str, gguf: Path, tokens: int, export_s: float | None) -> dict[str, Any]:
    """Median of three greedy decodes of `tokens` tokens after a warm-up; prompt processing is not timed."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=512, n_threads=os.cpu_count(), verbose=False)
    prompt = llm.tokenize(DECODE_PROMPT.encode(), add_bos=False, special=False)
    speeds = []
    for _ in range(4):
        stream = llm.generate(prompt, temp=0.0, reset=True)
        next(stream)  # the first token comes with the prompt's evaluation
        started = time.perf_counter()
        for _, _ in zip(range(tokens - 1), stream, strict=False):
            pass
        speeds.append((tokens - 1) / (time.perf_counter() - started))
    llm.close()
    return {
        "section": "export",
        "target": target,
        "metric": "decode tokens/s",
        "value": _median(speeds[1:]),
        "size_mb": round(gguf.stat().st_size / 1e6, 1),
        "tokens": tokens,
        **({"export_s": round(export_s, 1)} if export_s is not None else {}),
    }


# ---------------------------------------------------------------- the run

SECTIONS: dict[str, Callable[[argparse.Namespace, Path], list[dict[str, Any]]]] = {
    "pretrain": pretrain,
    "lora": lora,
    "export": export,
}
WORKERS = {"fmstack": worker_fmstack, "plain": worker_plain, "lora-fmstack": worker_lora_fmstack,
           "lora-plain": worker_lora_plain}  # fmt: skip


def machine_info() -> dict[str, Any]:
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


def report(results: dict[str, Any], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("section", "target", "metric", "value", "details", title="Training benchmark")
    for section, rows in results["sections"].items():
        for row in rows:
            details = ", ".join(
                f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                for k, v in row.items()
                if k not in ("section", "target", "metric", "value")
            )
            table.add_row(section, row["target"], row["metric"], f"{row['value']:,.1f}", details)
    Console().print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results, out / "train.png")
    print(f"wrote {out / 'train.json'} and {out / 'train.png'}")


def plot(results: dict[str, Any], path: Path) -> None:
    """One panel per section: its targets' main metric side by side."""
    from matplotlib.figure import Figure

    sections = results["sections"]
    fig = Figure(figsize=(5 * len(sections), 4), layout="constrained")
    axes = fig.subplots(1, len(sections), squeeze=False)[0]
    for ax, (section, rows) in zip(axes, sections.items(), strict=True):
        bars = ax.bar([r["target"].replace(" ", "\n", 1) for r in rows], [r["value"] for r in rows],
                      color=["#c44e52", "#4c72b0", "#55a868", "#8172b2"][: len(rows)])  # fmt: skip
        ax.bar_label(bars, fmt="%.4g")
        ax.set_title(f"{section}: {rows[0]['metric']}")
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle(f"{os.cpu_count()} CPUs, {results['machine']['date']}")
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: tiny models, few steps")
    p.add_argument("--only", action="append", choices=list(SECTIONS), help="run only this section (repeatable)")
    p.add_argument("--out", type=Path, default=HERE / "results")
    for hidden in ("--worker", "--blocks", "--model", "--preset", "--work"):
        p.add_argument(hidden, help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args)))
        return
    previous = args.out / "train.json"
    results = json.loads(previous.read_text()) if previous.exists() else {"sections": {}}
    results["machine"] = machine_info()
    with tempfile.TemporaryDirectory(prefix="fmstack-train-bench-") as tmp:
        for name in args.only or list(SECTIONS):
            print(f"{name}…", file=sys.stderr)
            results["sections"][name] = SECTIONS[name](args, Path(tmp) / name)
    report(results, args.out)


if __name__ == "__main__":
    main()
