"""`fmstack train dpo`: TRL's DPO on SmolLM2 with LoRA opens a reward margin on the pairs it trains on, the merged
model loads, and broken preference files stop before any model is loaded, naming the line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fmstack.cli import app
from tests.conftest import TEST_MODEL

PAIRS = [
    ("What is the capital of France?", "Paris.", "I am not sure, maybe Lyon or Marseille."),
    ("What is 2 + 2?", "4.", "That depends on many things, it is hard to say."),
    ("Name a primary colour.", "Red.", "Colours are subjective, so I cannot answer that."),
    ("Which planet is closest to the Sun?", "Mercury.", "I do not know much about planets, sorry."),
]


def conversational(prompt: str, chosen: str, rejected: str) -> dict:
    return {
        "prompt": [{"role": "user", "content": prompt}],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def run(*args: str):
    return CliRunner().invoke(app, ["train", "dpo", "--model", TEST_MODEL, *args])


@pytest.fixture(scope="module")
def smollm2_home(tmp_path_factory) -> Path:
    """A data dir holding SmolLM2 converted to a checkpoint once per session (shared with the other train tests)."""
    from tests.model.train.test_base_model import shared_checkpoint

    settings, _ = shared_checkpoint(tmp_path_factory)
    return settings.home


@pytest.mark.slow
def test_dpo_with_lora_widens_the_margin_on_its_pairs(smollm2_home, tmp_path, monkeypatch):
    monkeypatch.setenv("FMSTACK_HOME", str(smollm2_home))
    monkeypatch.setenv("FMSTACK_THREADS", "1")  # one thread beats two on a busy 2-core machine
    data = write_jsonl(tmp_path / "prefs.jsonl", [conversational(*p) for p in PAIRS])
    held_out = write_jsonl(tmp_path / "held.jsonl", [conversational("Who wrote Hamlet?", "Shakespeare.", "No idea.")])
    out = tmp_path / "run"
    options = ("--steps", "4", "--lr", "5e-4", "--max-length", "128", "--eval-data", str(held_out))
    result = run("--data", str(data), "--out", str(out), *options)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pairs"] == {"train": 4, "held_out": 1} and summary["steps"] == 4 and summary["processes"] == 1
    assert summary["format"] == "conversational" and set(summary["after"]["held_out"]) == set(summary["after"]["train"])
    before, after = summary["before"]["train"], summary["after"]["train"]
    assert before["rewards/margins"] == pytest.approx(0, abs=1e-6)  # the policy starts as the reference
    assert after["rewards/margins"] > 0.05 and after["rewards/accuracies"] >= 0.75
    assert after["logps/margin"] > before["logps/margin"]  # chosen answers became likelier relative to rejected
    assert after["loss"] < before["loss"] == pytest.approx(0.6931, abs=1e-3)
    assert "reward margin" in result.output

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert (out / "adapter" / "adapter_config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(out / "model")  # merged: a plain checkpoint, no PEFT needed
    tokenizer = AutoTokenizer.from_pretrained(out / "model")
    question = [{"role": "user", "content": PAIRS[0][0]}]
    ids = tokenizer.apply_chat_template(question, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        assert torch.isfinite(model(**ids).logits).all()


@pytest.mark.slow
def test_pairs_too_long_and_unknown_target_modules_fail_before_training(smollm2_home, tmp_path, monkeypatch):
    monkeypatch.setenv("FMSTACK_HOME", str(smollm2_home))
    data = write_jsonl(tmp_path / "prefs.jsonl", [conversational(*p) for p in PAIRS])
    result = run("--data", str(data), "--out", str(tmp_path / "a"), "--max-length", "24")
    assert result.exit_code == 2
    assert "prefs.jsonl:1: the prompt and its longer answer are" in " ".join(result.output.split())
    result = run("--data", str(data), "--out", str(tmp_path / "b"), "--target-modules", "q_proj,qkv")
    assert result.exit_code == 2
    assert "--target-modules: qkv not in the model; its linear modules are" in " ".join(result.output.split())
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


GOOD = conversational(*PAIRS[0])


@pytest.mark.parametrize(
    ("records", "message"),
    [
        (
            [GOOD, {k: v for k, v in GOOD.items() if k != "rejected"}],
            "prefs.jsonl:2: rejected: required field is missing",
        ),
        ([], "prefs.jsonl: the file is empty"),
        ([GOOD, GOOD | {"rejected": GOOD["chosen"]}], "prefs.jsonl:2: rejected: the same as chosen"),
        ([{"prompt": "Hi", "chosen": "Hello", "rejected": "Hello "}], "prefs.jsonl:1: rejected: the same as chosen"),
        ([GOOD | {"chosen": "Paris."}], "prefs.jsonl:1: chosen: a string, but the prompt is a list of messages"),
        ([GOOD | {"chosen": [{"role": "user", "content": "Paris."}]}], "prefs.jsonl:1: chosen: must be assistant"),
        (
            [GOOD, {"prompt": "Hi", "chosen": "Hello", "rejected": "Go away"}],
            "prefs.jsonl:2: prompt: the format differs",
        ),
        ([GOOD | {"prompt": []}], "prefs.jsonl:1: prompt: must end with the user's turn"),
    ],
)
def test_broken_preference_files_exit_2_naming_the_line(home, tmp_path, records, message):
    data = write_jsonl(tmp_path / "prefs.jsonl", records)
    result = run("--data", str(data), "--out", str(tmp_path / "run"))
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not (home / "models").exists()  # failed before any model was prepared


def test_standard_format_pairs_load_as_trl_reads_them(tmp_path):
    from fmstack.model.train.chat_data import load_preferences

    data = write_jsonl(tmp_path / "prefs.jsonl", [{"prompt": "Q: 2+2?\nA:", "chosen": " 4", "rejected": " 5", "id": 7}])
    assert [p.to_trl() for p in load_preferences(data)] == [{"prompt": "Q: 2+2?\nA:", "chosen": " 4", "rejected": " 5"}]
