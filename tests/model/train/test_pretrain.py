"""`fmstack train pretrain`: a real tiny Llama trained on real packed blocks (gensim's Lee news corpus, a BPE
trained on it), checked as a user would: the checkpoint loads in transformers and serves in fmstack, kill -9 and
--resume give the same weights as an uninterrupted run, `accelerate launch` runs it on two processes, and every
mistake is one clear line with exit code 2 before any training."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from fmstack import cli
from fmstack.cli import app
from fmstack.model.data import tokenize as tk
from fmstack.model.train.pretrain import BlockOrder

runner = CliRunner()
BLOCK = 64
# One thread: on a machine shared with other work, OpenMP's spinning threads make tiny models many times slower.
ENV = os.environ | {"OMP_NUM_THREADS": "1"}


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setattr(cli.console, "width", 250)
    monkeypatch.setattr(cli.err, "width", 250)


@pytest.fixture(scope="module")
def blocks(tmp_path_factory) -> Path:
    """What `fmstack data run` writes with tokenize: {train: ..., pack: ...}: tokenizer/ beside blocks/."""
    from gensim.test.utils import datapath

    out = tmp_path_factory.mktemp("data")
    lines = Path(datapath("lee_background.cor")).read_text(encoding="utf-8").splitlines()
    texts = [line.strip() for line in lines if line.strip()]
    tk.save_tokenizer(tk.train_bpe(texts, vocab_size=1000), out / "tokenizer")
    tok = tk.load_tokenizer(out / "tokenizer")
    tk.pack_blocks(
        tk.encode_stream(tok, texts),
        BLOCK,
        tok.bos_id,
        tok.eos_id,
        out / "blocks",
        vocab_size=tok.vocab_size,
        tokenizer="tokenizer/ (trained by this run)",
    )
    return out / "blocks"


def pretrain(*args: str, home: Path | None = None):
    env = {"FMSTACK_HOME": str(home)} if home else None
    return runner.invoke(app, ["train", "pretrain", *args], env=env)


@pytest.fixture(scope="module")
def run(blocks, tmp_path_factory) -> tuple[Path, Path, object]:
    """One tiny run (40 steps), registered under a name, shared by the tests that read its outputs."""
    base = tmp_path_factory.mktemp("run")
    out, home = base / "tiny", base / "home"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as ENV does for subprocesses
    result = pretrain(
        "--data", str(blocks), "--config", "tiny", "--out", str(out), "--steps", "40", "--eval-every", "20",
        "--checkpoint-every", "20", "--name", "tiny-lee", home=home,
    )  # fmt: skip
    torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    return out, home, result


def rows(out: Path, kind: str) -> list[dict]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def test_writes_a_hugging_face_checkpoint_that_learned(run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, _, result = run
    assert "perplexity" in result.output and "tok/s" in result.output
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert (tokenizer.bos_token, tokenizer.eos_token) == ("<|bos|>", "<|eos|>")
    assert model.config.vocab_size == 1000 and model.config.bos_token_id == tokenizer.bos_token_id == 0
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id == 1
    ids = tokenizer("The prime minister said", return_tensors="pt").input_ids
    assert ids[0, 0] == tokenizer.bos_token_id  # prompts start like every training document
    text = tokenizer.decode(model.generate(ids, max_new_tokens=8, do_sample=False)[0], skip_special_tokens=True)
    assert text.startswith("The prime minister said") and len(text) > len("The prime minister said")

    train, val = rows(out, "train"), rows(out, "val")
    assert [r["step"] for r in train] == list(range(1, 41))
    assert [r["step"] for r in val] == [20, 40]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["val_loss"] == val[-1]["val_loss"] and summary["val_perplexity"] == pytest.approx(
        np.exp(val[-1]["val_loss"])
    )
    # Learned something: far below a uniform guess over the vocabulary (ln 1000 = 6.9), and still improving.
    assert summary["val_loss"] < 6.3 and val[1]["val_loss"] < val[0]["val_loss"]
    assert np.mean([r["loss"] for r in train[-5:]]) < np.mean([r["loss"] for r in train[:5]]) - 0.5
    assert summary["tokens_trained"] == 40 * 8 * BLOCK and summary["tokens_per_s"] > 0
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-000020"]
    lrs = [r["lr"] for r in train]  # linear warmup over 5 steps, then cosine down to lr × 0.1
    assert lrs[0] == 0 and lrs[5] == pytest.approx(3e-3) and lrs[-1] == pytest.approx(3e-4, rel=0.05)


@pytest.mark.slow
def test_registered_model_serves_on_the_transformers_engine(run, monkeypatch):
    import asyncio

    from fmstack.core.config import get_settings
    from fmstack.core.registry import Registry
    from fmstack.engines.base import Delta, GenerationRequest
    from fmstack.engines.pool import load_engine

    out, home, _ = run
    monkeypatch.setenv("FMSTACK_HOME", str(home))
    settings = get_settings()
    spec = Registry(settings).get("tiny-lee")
    assert (spec.engine, spec.context_length) == ("transformers", 256)
    engine = load_engine(spec, settings)

    async def complete() -> str:
        request = GenerationRequest(prompt="The government", max_tokens=6, temperature=0)
        return "".join([e.text async for e in engine.stream(engine.prepare(request)) if isinstance(e, Delta)])

    try:
        assert asyncio.run(complete()).strip()
    finally:
        engine.close()


def test_data_order_is_a_pure_function_of_seed_and_position():
    whole = list(BlockOrder(10, 7, 0, 35))
    assert sorted(whole[:10]) == list(range(10)) and sorted(whole[10:20]) == list(range(10))
    assert whole[:10] != whole[10:20]  # a new permutation each epoch
    assert list(BlockOrder(10, 7, 13, 35)) == whole[13:]  # resuming at position 13 reads what was left
    assert list(BlockOrder(10, 8, 0, 10)) != whole[:10]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "fmstack", "train", "pretrain", *args]


@pytest.mark.slow
def test_kill_9_then_resume_gives_the_uninterrupted_result(blocks, tmp_path):
    common = ["--data", str(blocks), "--config", "tiny", "--steps", "100", "--eval-every", "25", "--checkpoint-every",
              "10", "--seed", "3"]  # fmt: skip
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    proc = subprocess.Popen(_cli(*common, "--out", str(killed)), env=ENV, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list((killed / "checkpoints").glob("step-*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "summary.json").exists(), "the run finished before it could be killed"
    subprocess.run(_cli(*common, "--out", str(whole)), env=ENV, check=True, stdout=subprocess.DEVNULL)
    resumed = subprocess.run(_cli(*common, "--out", str(killed), "--resume"), env=ENV, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr

    a, b = load_file(whole / "model.safetensors"), load_file(killed / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["step"] for r in rows(killed, "train")] == list(range(1, 101))  # none doubled, none missing
    assert [r["loss"] for r in rows(killed, "train")] == [r["loss"] for r in rows(whole, "train")]
    assert rows(killed, "val") == rows(whole, "val")
    assert json.loads((killed / "summary.json").read_text())["val_loss"] == rows(whole, "val")[-1]["val_loss"]


@pytest.mark.slow
def test_accelerate_launch_on_two_cpu_processes(blocks, tmp_path):
    """The multi-GPU command with ACCELERATE_USE_CPU=1: two processes with gloo, each reading its half of every
    step's batch."""
    out = tmp_path / "ddp"
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "fmstack", "train", "pretrain",
           "--data", str(blocks), "--config", "tiny", "--out", str(out), "--steps", "6", "--warmup", "2",
           "--checkpoint-every", "3", "--eval-every", "3"]  # fmt: skip
    done = subprocess.run(cmd, env=ENV | {"ACCELERATE_USE_CPU": "1"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("wrote ") == 1  # one process reports
    checkpoint = out / "checkpoints" / "step-000003"
    assert {"random_states_0.pkl", "random_states_1.pkl", "model.safetensors"} <= {p.name for p in checkpoint.iterdir()}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["tokens_trained"] == 6 * 2 * 8 * BLOCK
    assert [r["step"] for r in rows(out, "train")] == list(range(1, 7))


# ---------------------------------------------------------------- mistakes: exit 2, one line, before training


def fails(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output, result.output


def test_missing_or_unpacked_data(tmp_path):
    fails(pretrain("--data", str(tmp_path / "nope"), "--config", "tiny", "--out", str(tmp_path / "o")),
          "no such folder", "fmstack data run")  # fmt: skip
    (tmp_path / "empty").mkdir()
    fails(pretrain("--data", str(tmp_path / "empty"), "--config", "tiny", "--out", str(tmp_path / "o")),
          "no manifest.json")  # fmt: skip
    assert not (tmp_path / "o").exists()


def test_config_file_errors_name_the_file_line_and_field(blocks, tmp_path):
    config = tmp_path / "model.yaml"
    config.write_text("model:\n  hidden_size: 64\n  num_layers: 2\n")
    fails(pretrain("--data", str(blocks), "--config", str(config), "--out", str(tmp_path / "o")),
          f"{config}:3: model.num_layers: unknown field")  # fmt: skip
    config.write_text("model:\n  hidden_size: 64\ntrain:\n  lr: fast\n")
    fails(pretrain("--data", str(blocks), "--config", str(config), "--out", str(tmp_path / "o")),
          f"{config}:4: train.lr:")  # fmt: skip
    config.write_text("model:\n  hidden_size: 64\n  num_attention_heads: 4\n  num_key_value_heads: 2\n"
                      "  max_position_embeddings: 32\n")  # fmt: skip
    fails(pretrain("--data", str(blocks), "--config", str(config), "--out", str(tmp_path / "o")),
          f"{config}:5: model.max_position_embeddings", "shorter than the blocks", "at least 64")  # fmt: skip
    json_config = tmp_path / "model.json"
    json_config.write_text('{"model": {"hidden_size": 60, "num_attention_heads": 8}}')
    fails(pretrain("--data", str(blocks), "--config", str(json_config), "--out", str(tmp_path / "o")),
          f"{json_config}:1: model.hidden_size: 60 is not divisible")  # fmt: skip
    fails(pretrain("--data", str(blocks), "--config", "medium", "--out", str(tmp_path / "o")), "not a preset")
    fails(pretrain("--data", str(blocks), "--config", "tiny", "--out", str(tmp_path / "o"), "--lr", "-1"), "--lr:")
    fails(pretrain("--data", str(blocks), "--config", "tiny", "--out", str(tmp_path / "o"), "--steps", "5"),
          "--warmup")  # fmt: skip
    assert not (tmp_path / "o").exists()


def test_resume_needs_a_checkpoint_of_the_same_run(blocks, run, tmp_path):
    out, _, _ = run
    fails(pretrain("--data", str(blocks), "--config", "tiny", "--out", str(tmp_path / "new"), "--resume"),
          "no checkpoint to resume from")  # fmt: skip
    fails(pretrain("--data", str(blocks), "--config", "tiny", "--out", str(out), "--steps", "40", "--lr", "0.01",
                   "--resume"), "different run", "lr: 0.003 in the checkpoint, 0.01 now")  # fmt: skip
    fails(pretrain("--data", str(blocks), "--config", "tiny", "--out", str(out), "--steps", "40"),
          "holds a training run already", "--resume")  # fmt: skip


def test_a_run_that_cannot_fit_in_memory_is_refused_before_training(blocks, tmp_path, monkeypatch):
    monkeypatch.setattr("fmstack.model.train.memory.available_bytes", lambda device: 2 * 1024**2)
    out = tmp_path / "o"
    result = pretrain("--data", str(blocks), "--config", "tiny", "--out", str(out))
    fails(result, "This run needs about", "activations for a batch of 8 × 64 tokens", "0.0 GB free",
          "Lower train.batch_size")  # fmt: skip
    assert not (out / "metrics.jsonl").exists()


def test_running_out_of_memory_mid_run_says_where_and_what_to_change(blocks, tmp_path, monkeypatch):
    from transformers import LlamaForCausalLM

    real, calls = LlamaForCausalLM.forward, []

    def forward(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(LlamaForCausalLM, "forward", forward)
    result = pretrain("--data", str(blocks), "--config", "tiny", "--out", str(tmp_path / "o"))
    fails(result, "Ran out of memory at step 3 of 50", "Lower train.batch_size")
