"""`fmstack train classify`: the packaged MiniLM learns spam-or-not from a small file, and bad files stop early."""

from __future__ import annotations

import csv
import json
import runpy
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fmstack.cli import app

REPO = Path(__file__).resolve().parents[3]


def run(*args: str):
    return CliRunner().invoke(app, ["train", "classify", *args])


def write_csv(path: Path, rows: list[tuple[str, str]], header: tuple[str, str] = ("text", "label")) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.mark.slow
def test_small_spam_set_trains_well_above_chance(home, tmp_path, monkeypatch):
    monkeypatch.setenv("FMSTACK_THREADS", "1")  # one thread beats two on a busy 2-core machine
    messages = runpy.run_path(str(REPO / "examples" / "train" / "spam" / "make_spam.py"))["messages"]
    data = write_csv(tmp_path / "sms.csv", messages(n=96, seed=5))
    out = tmp_path / "run"
    result = run(
        "--data",
        str(data),
        "--out",
        str(out),
        "--epochs",
        "3",
        "--lr",
        "1e-4",
        "--eval-split",
        "0.25",
        "--max-length",
        "48",
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["labels"] == ["ham", "spam"] and summary["eval_examples"] == 24
    after = summary["after"]
    assert after["accuracy"] >= 0.85 > summary["majority_baseline"]["accuracy"] + 0.2
    assert sum(map(sum, after["confusion"])) == 24
    assert set(after["per_class"]) == {"ham", "spam"}
    # a checkpoint anyone can load, which says labels rather than class numbers
    from transformers import pipeline

    classify = pipeline("text-classification", model=str(out), device="cpu")
    assert classify("WINNER! Claim your free iPhone now, text WIN to 80888")[0]["label"] == "spam"
    assert classify("Running late, see you at the station at 7")[0]["label"] == "ham"
    assert "held-out accuracy" in result.output
    again = run("--data", str(data), "--out", str(out))  # a finished run is not overwritten by accident
    assert again.exit_code == 2 and "add --force to replace it" in " ".join(again.output.split())


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        ("text,label\nhello,ham\nhi there,ham\nyo,ham\n", (), "every record has the label 'ham'"),
        ("text,label\nhello,ham\nwin now,spam\nhi,\n", (), "sms.csv:4: label: must be a non-empty string"),
        ("text,label\nhello,ham\n", ("--label-field", "category"), "sms.csv:2: category: required field is missing"),
        ("text,label\nhello,ham\nwin,spam\nhi,ham\n", (), "label(s) 'spam' occur once"),
        ("text,label\n", (), "sms.csv: no records"),
    ],
)
def test_bad_files_exit_2_before_training(home, tmp_path, content, args, message):
    data = tmp_path / "sms.csv"
    data.write_text(content)
    result = run("--data", str(data), "--out", str(tmp_path / "run"), *args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "run").exists()


def test_jsonl_errors_name_the_line(home, tmp_path):
    data = tmp_path / "sms.jsonl"
    data.write_text('{"text": "hello", "label": "ham"}\n{"text": "win", "label": "spam"}\n{"body": "x"}\n')
    result = run("--data", str(data), "--out", str(tmp_path / "run"))
    assert result.exit_code == 2
    assert (
        "sms.jsonl:3: text: required field is missing (the record has 'body'); name the right one with --text-field"
        in (" ".join(result.output.split()))
    )
