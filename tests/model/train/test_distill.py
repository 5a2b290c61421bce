"""`fmstack train distill` with tiny models trained here (a teacher, and a smaller student with the same tokenizer):
sequence-level distillation makes the teacher's answer to a held-out prompt likelier for the student; logit-level
distillation lowers the student's KL divergence to the teacher; an interrupted teacher run resumes without asking
again for the answers it finished; bad input is one line and exit code 2, before anything heavy and with nothing
registered."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from fmstack import cli
from fmstack.cli import app
from fmstack.core.config import get_settings
from fmstack.core.errors import InvalidRequest
from fmstack.core.registry import register_user_model
from fmstack.model.train.distill import generate_answers, load_prompts
from tests.model import tiny_models

runner = CliRunner()
HELD_OUT_PROMPT = "The fires near Sydney"
TEACHER = "tiny-teacher"


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    """Rich wraps at the terminal width; tests read whole error lines."""
    monkeypatch.setattr(cli.console, "width", 250)
    monkeypatch.setattr(cli.err, "width", 250)


@dataclass(frozen=True)
class Models:
    teacher: Path
    student: Path
    stranger: Path  # another tokenizer
    prompts: Path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Models:
    root = tmp_path_factory.mktemp("distill")
    tokens = tiny_models.tokenizer(root / "tokenizer")
    prompts = root / "prompts.jsonl"
    lines = [" ".join(line.split()[:6]) for line in tiny_models.TEXTS[40:100] if line.split()]
    prompts.write_text("".join(json.dumps({"prompt": line}) + "\n" for line in lines))
    return Models(
        teacher=tiny_models.llama(root / "teacher", tokens, hidden=64, steps=60, seed=0),
        student=tiny_models.llama(root / "student", tokens, hidden=32, steps=5, seed=1),
        stranger=tiny_models.llama(root / "stranger", tiny_models.tokenizer(root / "other", 500), steps=1),
        prompts=prompts,
    )


@pytest.fixture()
def teacher(models, home, monkeypatch) -> str:
    """The tiny teacher registered (transformers engine) in a fresh FMSTACK_HOME."""
    monkeypatch.setenv("FMSTACK_THREADS", "1")
    register_user_model(get_settings(), TEACHER, engine="transformers", source=f"path:{models.teacher}",
                        context_length=256)  # fmt: skip
    return TEACHER


def distill(models: Models, out: Path, *flags: str):
    args = ["train", "distill", "--teacher", TEACHER, "--student", str(models.student), "--prompts",
            str(models.prompts), "--out", str(out), "--max-tokens", "12", "--keep-truncated", "--method", "full",
            "--seed", "0", *flags]  # fmt: skip
    return runner.invoke(app, args)


def chat_ids(tokenizer, prompt: str) -> list[int]:
    """The prompt as the student is trained on it: the chat template's text, tokenized without extra specials."""
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    return tokenizer.encode(text, add_special_tokens=False)


@torch.no_grad()
def answer_nll(checkpoint: Path, prompt: str, answer_ids: list[int]) -> float:
    """Mean negative log-likelihood of the answer tokens after the chat-formatted prompt."""
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    context = chat_ids(tokenizer, prompt)
    ids = torch.tensor([context + answer_ids])
    logits = model(ids).logits[0, len(context) - 1 : -1]
    return float(torch.nn.functional.cross_entropy(logits, torch.tensor(answer_ids)))


@torch.no_grad()
def teacher_answer(checkpoint: Path, prompt: str, tokens: int = 12) -> list[int]:
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    context = chat_ids(tokenizer, prompt)
    out = model.generate(torch.tensor([context]), max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
    return out[0, len(context) :].tolist()


@pytest.mark.slow
def test_sequence_distillation_moves_the_student_toward_the_teacher(models, teacher, tmp_path):
    result = distill(models, tmp_path / "run", "--steps", "40", "--lr", "3e-3", "--batch-size", "8", "--name", "pupil")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["teacher"]["answered"] == summary["prompts"] == summary["train_records"] > 40
    assert summary["student"]["steps"] == 40 and summary["student"]["model"] == "model"
    answers = [json.loads(line) for line in (tmp_path / "run" / "answers.jsonl").read_text().splitlines()]
    assert all(a["trace_id"] and a["teacher"]["model"] == TEACHER for a in answers)  # traced, through the gateway
    target = teacher_answer(models.teacher, HELD_OUT_PROMPT)
    before = answer_nll(models.student, HELD_OUT_PROMPT, target)
    after = answer_nll(tmp_path / "run" / "student" / "model", HELD_OUT_PROMPT, target)
    assert after < before - 0.5, (before, after)  # the teacher's answer to a prompt it never saw became likelier
    assert "pupil" in get_settings().user_registry.read_text()


@pytest.mark.slow
def test_logit_distillation_lowers_the_kl_to_the_teacher(models, teacher, tmp_path):
    result = distill(models, tmp_path / "run", "--level", "logit", "--alpha", "1", "--top-k", "8", "--steps", "20",
                     "--lr", "3e-3", "--eval-split", "0.2")  # fmt: skip
    assert result.exit_code == 0, result.output
    student = json.loads((tmp_path / "run" / "summary.json").read_text())["student"]
    assert student["eval_kl_after"] < 0.8 * student["eval_kl_before"], student
    stored = load_file(tmp_path / "run" / "teacher_topk.safetensors")
    assert stored["values"].dtype == torch.float16 and stored["ids"].shape[1] == 8
    assert stored["offsets"][-1] == len(stored["values"])  # one row per assistant token of every conversation
    assert "held-out KL to the teacher's top-8" in result.output


@dataclass
class FakeAnswer:
    text: str
    finish_reason: str = "stop"
    completion_tokens: int = 3
    trace_id: str = "t"


def test_resumed_teacher_generation_does_not_redo_finished_prompts(tmp_path):
    prompts_file = tmp_path / "prompts.jsonl"
    prompts_file.write_text("".join(json.dumps({"prompt": f"question {i}"}) + "\n" for i in range(6)))
    prompts = load_prompts(prompts_file)
    answers, identity = tmp_path / "answers.jsonl", {"model": "teacher", "max_tokens": 8}
    first, second = [], []

    def teacher(asked: list[str], killed_after: int | None = None):
        async def complete(messages):
            if len(asked) == killed_after:
                raise KeyboardInterrupt  # the run is killed
            asked.append(messages[0]["content"])
            return FakeAnswer(f"answer to {messages[0]['content']}")

        return complete

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(generate_answers(teacher(first, killed_after=3), prompts, answers, identity, 1, lambda *_: None))
    with answers.open("a") as f:
        f.write('{"id": "torn by the kill')  # half a line: the kill came in the middle of a write
    got, stats = asyncio.run(generate_answers(teacher(second), prompts, answers, identity, 2, lambda *_: None))
    assert len(first) == 3 and stats.resumed == 3 and stats.answered == 3
    assert sorted(first + second) == sorted(f"question {i}" for i in range(6))  # nothing asked twice
    assert {a["answer"] for a in got.values()} == {f"answer to question {i}" for i in range(6)}
    assert len(answers.read_text().splitlines()) == 6  # the torn line is gone, every answer once
    with pytest.raises(InvalidRequest, match="resume with the same teacher"):
        asyncio.run(generate_answers(teacher([]), prompts, answers, {"model": "other"}, 2, lambda *_: None))


def test_an_sft_file_is_a_prompts_file_with_references(tmp_path):
    good = tmp_path / "sft.jsonl"
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    good.write_text(json.dumps({"messages": turns}) + "\n")
    [prompt] = load_prompts(good, need_reference=True)
    assert prompt.messages == [{"role": "user", "content": "Hi"}] and prompt.reference == "Hello"


@pytest.mark.parametrize(
    ("lines", "flags", "expected"),
    [
        (['{"prompt": "a"}', '{"prompt": "b"}', '{"promt": "c"}'], [], "prompts.jsonl:3: messages: required field"),
        (['{"prompt": "a"}', "not json"], [], "prompts.jsonl:2: not valid JSON"),
        (['{"prompt": ""}'], [], "prompts.jsonl:1: prompt: is empty"),
        (['{"messages": [{"role": "assistant", "content": "x"}]}'], [], "prompts.jsonl:1: messages: must end with"),
        (['{"prompt": "a"}'], ["--answers", "reference"], "prompts.jsonl:1: reference: required with --answers"),
        (['{"prompt": "a"}'], ["--level", "token"], "--level is 'token'; use sequence or logit"),
        (['{"prompt": "a"}'], ["--teacher", "nope"], "The model 'nope' does not exist"),
        (['{"prompt": "a"}'], ["--teacher", "gone"], "local path /no/such/teacher does not exist"),
        (['{"prompt": "a"}'], ["--level", "logit", "--student", "STRANGER"], "have different tokenizers"),
        (['{"prompt": "a"}'], ["--filter", "jsonish"], "--filter 'jsonish': no metric 'jsonish'"),
        (['{"prompt": "a"}'], ["--filter", "correctness"], "--filter correctness is judged by a model; name it"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_with_nothing_registered(models, teacher, tmp_path, lines, flags, expected):
    register_user_model(get_settings(), "gone", engine="transformers", source="path:/no/such/teacher",
                        context_length=256)  # fmt: skip
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(lines) + "\n")
    flags = [str(models.stranger) if f == "STRANGER" else f for f in flags]
    args = ["train", "distill", "--teacher", TEACHER, "--student", str(models.student), "--prompts", str(prompts),
            "--out", str(tmp_path / "run"), "--name", "never", *flags]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
    assert "never" not in get_settings().user_registry.read_text()


@pytest.mark.slow
def test_a_metric_filter_drops_the_answers_that_fail_it(models, teacher, tmp_path):
    result = distill(models, tmp_path / "run", "--filter", "json_valid", "--steps", "1")
    assert result.exit_code == 2, result.output
    prompts = len(load_prompts(models.prompts))
    assert f"no answer is left to train on ({prompts} filtered)" in result.output  # the tiny teacher writes no JSON
    assert len((tmp_path / "run" / "answers.jsonl").read_text().splitlines()) == prompts  # kept for the next try


def test_distill_help_has_an_example():
    assert "Example: fmstack train distill" in runner.invoke(app, ["train", "distill", "--help"]).output
