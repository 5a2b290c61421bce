"""`fmstack train finetune`: chat data validation, the assistant-only label mask on SmolLM2's template, a short LoRA
run whose merged model serves through the transformers engine, a full fine-tune, accelerate launch, bad input."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from fmstack.cli import app
from fmstack.core.config import Settings
from fmstack.core.errors import InvalidRequest
from fmstack.core.registry import Registry
from fmstack.engines.base import Delta, Finish, GenerationRequest
from fmstack.engines.pool import load_engine
from fmstack.model.train.chat_data import load_sft
from fmstack.model.train.finetune import IGNORE, encode_chat
from tests.conftest import TEST_MODEL
from tests.model.train.test_base_model import shared_checkpoint

SYSTEM = {"role": "system", "content": "Answer with one word."}
QUESTIONS = ["Name a fruit.", "What is yellow?", "What do monkeys eat?", "Pick a snack."]


def chat(question: str, answer: str) -> dict:
    return {"messages": [SYSTEM, {"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def finetune(*args: str):
    return CliRunner().invoke(app, ["train", "finetune", *args])


def one_line(output: str) -> str:
    return " ".join(output.split())


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[Settings, Path]:
    return shared_checkpoint(tmp_path_factory)


@pytest.fixture()
def home(checkpoint, monkeypatch) -> Path:
    """FMSTACK_HOME with SmolLM2 already converted: the CLI finds the cached, verified checkpoint."""
    settings, _ = checkpoint
    monkeypatch.setenv("FMSTACK_HOME", str(settings.home))
    monkeypatch.setenv("FMSTACK_THREADS", "2")
    return settings.home


# --- data files -------------------------------------------------------------------------------------------------


def test_sft_files_load_from_jsonl_and_json_with_their_lines(tmp_path):
    rows = [chat(q, "Banana") for q in QUESTIONS[:2]]
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text(f"{json.dumps(rows[0])}\n\n{json.dumps(rows[1])}\n")  # a blank line is skipped, not counted
    assert [r.line for r in load_sft(jsonl)] == [1, 3]
    as_json = tmp_path / "a.json"
    as_json.write_text(json.dumps(rows, indent=2))
    records = load_sft(as_json)
    assert [r.messages[-1].content for r in records] == ["Banana", "Banana"]
    assert records[0].line == 2 and records[1].line > records[0].line


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "the file is empty"),
        ("[]\n", "no records"),
        ('{"messages": []}\n{"messages": [\n', ":2: not valid JSON"),
        (
            '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n{"text": 1}\n',
            ":2: messages: required field is missing",
        ),
        ('{"messages": [{"role": "bot", "content": "hi"}]}\n', ":1: messages[0].role: Input should be 'system'"),
        ('{"messages": [{"role": "user", "content": ["hi"]}]}\n', ":1: messages[0].content: Input should be a valid"),
        ('{"messages": [{"role": "user", "content": "hi"}]}\n', ":1: messages: no assistant turn"),
        ("[1, 2]\n", ":1: expected a JSON object with messages, got a int"),
    ],
)
def test_bad_data_files_exit_2_naming_file_line_and_field(tmp_path, content, message):
    data = tmp_path / "sft.jsonl"
    data.write_text(content)
    result = finetune("--model", TEST_MODEL, "--data", str(data), "--out", str(tmp_path / "run"))
    assert result.exit_code == 2, result.output
    assert f"{data}" in one_line(result.output) and message in one_line(result.output)
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()


def test_bad_options_exit_2_before_reading_anything(tmp_path):
    data = write_jsonl(tmp_path / "sft.jsonl", [chat("Name a fruit.", "Banana")])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("taken")
    for args, message in [
        (["--method", "qlora"], "use lora or full"),
        (["--lora-r", "0"], "--lora-r is 0"),
        (["--eval-split", "1.5"], "--eval-split is 1.5"),
        (["--out", str(tmp_path / "full")], "already exists and is not empty"),
    ]:
        result = finetune("--model", TEST_MODEL, "--data", str(data), "--out", str(tmp_path / "run"), *args)
        assert result.exit_code == 2 and message in one_line(result.output), result.output


# --- the label mask ---------------------------------------------------------------------------------------------


def labelled_spans(example) -> list[list[int]]:
    spans, current = [], []
    for token, label in zip(example.input_ids, example.labels, strict=True):
        if label != IGNORE:
            assert label == token
            current.append(token)
        elif current:
            spans, current = [*spans, current], []
    return spans + ([current] if current else [])


@pytest.mark.slow
def test_loss_mask_covers_each_assistant_turn_and_its_end_token_only(checkpoint):
    tokenizer = AutoTokenizer.from_pretrained(checkpoint[1])
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "What is 2+2? Say <|im_start|> never."},
        {"role": "assistant", "content": "4"},
    ]
    example = encode_chat(tokenizer, messages)
    assert [tokenizer.decode(s) for s in labelled_spans(example)] == ["Hello! How can I help?<|im_end|>", "4<|im_end|>"]
    # Without a system message SmolLM2's template inserts its default one: still masked out.
    example = encode_chat(tokenizer, messages[1:3])
    assert "You are a helpful AI assistant" in tokenizer.decode(example.input_ids)
    assert [tokenizer.decode(s) for s in labelled_spans(example)] == ["Hello! How can I help?<|im_end|>"]
    with pytest.raises(InvalidRequest, match="line 7: the model's chat template"):
        encode_chat(tokenizer, [{"role": "assistant", "content": "I start."}], line=7)


# --- validation that needs the model ----------------------------------------------------------------------------


@pytest.mark.slow
def test_model_dependent_mistakes_exit_2_before_training(home, tmp_path):
    data = write_jsonl(tmp_path / "sft.jsonl", [chat(q, "Banana") for q in QUESTIONS])
    base = ["--model", TEST_MODEL, "--data", str(data), "--out", str(tmp_path / "run")]
    result = finetune(*base, "--target-modules", "q_proj,query")
    assert result.exit_code == 2, result.output
    assert "query not in the model; its linear modules are" in one_line(result.output)
    assert "k_proj" in result.output and "o_proj" in result.output
    result = finetune(*base, "--max-length", "20")
    assert result.exit_code == 2, result.output
    assert f"{data}:1: 4 of 4 conversations are longer than 20 tokens" in one_line(result.output)
    assert "--truncate" in result.output
    result = finetune(*base, "--max-length", "100000")
    assert result.exit_code == 2 and "longer than the model's context (8192" in one_line(result.output)
    result = finetune("--model", "no-such-model", "--data", str(data), "--out", str(tmp_path / "run"))
    assert result.exit_code == 2 and "does not exist" in result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_run_that_cannot_fit_in_memory_exits_2_before_training(home, tmp_path, monkeypatch):
    monkeypatch.setattr("fmstack.model.train.memory.available_bytes", lambda device: 300 * 1024**2)
    data = write_jsonl(tmp_path / "sft.jsonl", [chat(q, "Banana") for q in QUESTIONS])
    result = finetune("--model", TEST_MODEL, "--data", str(data), "--out", str(tmp_path / "run"), "--batch-size", "2")
    assert result.exit_code == 2, result.output
    message = one_line(result.output)
    assert "This run needs about 0.6 GB (0.5 GB of weights" in message  # SmolLM2: 135M float32 parameters
    assert "for a batch of 2 ×" in message and "0.3 GB free" in message
    assert "Lower --batch-size" in message and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


# --- training ---------------------------------------------------------------------------------------------------


def generate(engine, messages: list[dict]) -> tuple[str, Finish]:
    async def go():
        request = GenerationRequest(messages=messages, max_tokens=8, temperature=0)
        events = [e async for e in engine.stream(engine.prepare(request))]
        return "".join(e.text for e in events if isinstance(e, Delta)), events[-1]

    return asyncio.run(go())


@pytest.mark.slow
def test_lora_fine_tune_learns_and_its_merged_model_serves(home, tmp_path):
    data = write_jsonl(tmp_path / "sft.jsonl", [chat(q, "Banana") for q in QUESTIONS])
    out = tmp_path / "run"
    result = finetune(
        "--model", TEST_MODEL, "--data", str(data), "--eval-data", str(data), "--out", str(out),
        "--steps", "6", "--batch-size", "2", "--lr", "5e-3", "--lora-r", "4", "--name", "banana-bot",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["train_examples"] == 4 and summary["eval_examples"] == 4
    assert summary["eval_loss_after"] < 0.5 * summary["eval_loss_before"]
    assert summary["train_loss_last"] < summary["train_loss_first"]
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["r"] == 4
    assert "<|im_start|>" in AutoTokenizer.from_pretrained(out / "model").chat_template
    settings = Settings(home=home, threads=2)
    spec = Registry(settings).get("banana-bot")
    assert spec.engine == "transformers" and spec.source == f"path:{(out / 'model').resolve()}"
    engine = load_engine(spec, settings)
    try:
        text, finish = generate(engine, [SYSTEM, {"role": "user", "content": "Name a yellow fruit."}])
    finally:
        engine.close()
    assert "Banana" in text and finish.reason == "stop"


@pytest.mark.slow
def test_full_fine_tune_changes_every_weight_matrix(home, checkpoint, tmp_path):
    data = write_jsonl(tmp_path / "sft.jsonl", [chat(q, "Banana") for q in QUESTIONS[:2]])
    out = tmp_path / "full"
    result = finetune(
        "--model", TEST_MODEL, "--data", str(data), "--eval-split", "0", "--out", str(out),
        "--method", "full", "--steps", "2", "--batch-size", "2", "--lr", "1e-4", "--max-length", "26", "--truncate",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "no held-out data" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["adapter"] is None and not (out / "adapter").exists() and summary["eval_loss_before"] is None
    assert summary["truncated"] >= 1 and summary["train_examples"] + summary["dropped"] == 2  # the longest is 27
    tuned = AutoModelForCausalLM.from_pretrained(out / "model", dtype=torch.float32).state_dict()
    base = load_file(next(checkpoint[1].glob("*.safetensors")))
    for name in ("model.layers.0.mlp.down_proj.weight", "model.layers.29.self_attn.k_proj.weight"):
        assert not torch.equal(tuned[name], base[name])


@pytest.mark.slow
def test_runs_unchanged_under_accelerate_launch_with_two_processes(home, tmp_path):
    data = write_jsonl(tmp_path / "sft.jsonl", [chat(q, "Banana") for q in QUESTIONS])
    out = tmp_path / "ddp"
    # `--cpu` alone means one process: on CPUs, `--multi_gpu` starts the processes and ACCELERATE_USE_CPU makes them
    # join a gloo process group.
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]
    args = ["-m", "fmstack", "train", "finetune", "--model", TEST_MODEL, "--data", str(data), "--eval-data", str(data)]
    args += ["--out", str(out), "--steps", "2", "--batch-size", "1", "--merge"]
    env = os.environ | {"FMSTACK_HOME": str(home), "FMSTACK_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    proc = subprocess.run(launch + args, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 2 and summary["eval_examples"] == 4
    assert proc.stdout.count("wrote ") == 1  # only the main process reports
    assert (out / "model" / "model.safetensors").exists()
