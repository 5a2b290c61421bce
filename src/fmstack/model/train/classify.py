"""Text classification: the packaged MiniLM encoder (a BERT model) fine-tuned with a classification head.

The chapter's spam-or-not example in code: a labelled CSV or JSONL file, a stratified held-out split, the held-out
scores before training (the untrained head, and the majority-class baseline a classifier must beat) and after, and
a Hugging Face checkpoint whose config maps class ids to label names, so `pipeline("text-classification")` and
fmstack read labels, not numbers. Everything about the file is checked before the model is loaded.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fmstack.core.config import Settings
from fmstack.core.errors import InvalidRequest
from fmstack.core.registry import Registry
from fmstack.model.train.chat_data import read_records
from fmstack.model.train.configs import ClassifyConfig
from fmstack.model.train.trainer_progress import quiet_libraries

ENCODER = "all-minilm-l6-v2"  # the packaged sentence encoder; its folder is a plain BERT checkpoint


@dataclass(frozen=True)
class Example:
    text: str
    label: str
    line: int


def load_labelled(path: Path, text_field: str = "text", label_field: str = "label") -> list[Example]:
    """A CSV (with a header row) or JSONL/JSON file of labelled texts; InvalidRequest names file, line and field."""
    if not path.is_file():
        raise InvalidRequest(f"{path}: no such file; give a labelled .csv or .jsonl file.")
    rows = _csv_rows(path) if path.suffix.lower() == ".csv" else _json_rows(path, text_field, label_field)
    examples = [_example(path, line, row, text_field, label_field) for line, row in rows]
    if not examples:
        raise InvalidRequest(f"{path}: no records; write a header row and one labelled text per line.")
    return examples


def check_classes(path: Path, examples: list[Example], eval_split: float) -> list[str]:
    """The sorted label names, once the split is known to hold out every class and keep some of each to learn."""
    if not 0 < eval_split < 1:
        raise InvalidRequest(f"--eval-split {eval_split}: must be between 0 and 1, e.g. 0.2.")
    counts = Counter(e.label for e in examples)
    if len(counts) < 2:
        only = next(iter(counts))
        raise InvalidRequest(f"{path}: every record has the label {only!r}; a classifier needs at least two labels.")
    rare = sorted(label for label, n in counts.items() if n < 2)
    if rare:
        raise InvalidRequest(
            f"{path}: label(s) {', '.join(map(repr, rare))} occur once; each label needs at least two examples "
            "(one to learn, one to test). Add examples or fix the label."
        )
    held_out = math.ceil(len(examples) * eval_split)  # as scikit-learn's train_test_split counts it
    if held_out < len(counts) or len(examples) - held_out < len(counts):
        raise InvalidRequest(
            f"{path}: {len(examples)} examples and --eval-split {eval_split} cannot hold out and train on each of "
            f"the {len(counts)} labels; add examples or change --eval-split."
        )
    return sorted(counts)


def train_classifier(
    data: Path, out: Path, settings: Settings, config: ClassifyConfig, *, force: bool = False, callbacks=()
) -> dict[str, Any]:
    """Validate, split, score before, train, score after, save; returns (and writes) the summary."""
    examples = load_labelled(data, config.text_field, config.label_field)
    labels = check_classes(data, examples, config.eval_split)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise InvalidRequest(f"{out} already holds files; choose a new --out folder or add --force to replace it.")
    encoder = Registry(settings).get(ENCODER).local_path(settings)
    import torch

    torch.set_num_threads(settings.threads)  # FMSTACK_THREADS, as for serving: fewer on a shared, busy machine
    return _train(examples, labels, encoder, out, config, callbacks)


def load_classifier(checkpoint: str | Path) -> Callable[[list[str]], list[dict[str, float]]]:
    """A trained checkpoint as a function from texts to each label's probability (by name, from id2label), cut at
    the length it was trained with: how fmstack uses a classifier, e.g. a review judge (`fmstack train judge`)."""
    folder = Path(checkpoint)
    if not (folder / "config.json").is_file():
        raise InvalidRequest(f"{folder}: not a classifier checkpoint (no config.json); train one with train classify.")
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    quiet_libraries()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    summary = folder / "summary.json"
    max_length = json.loads(summary.read_text())["config"]["max_length"] if summary.is_file() else 128

    def classify(texts: list[str]) -> list[dict[str, float]]:
        batch = tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        with torch.inference_mode():
            probabilities = model(**batch).logits.softmax(-1).tolist()
        return [dict(zip(labels, row, strict=True)) for row in probabilities]

    return classify


def _train(examples, labels, encoder: Path, out: Path, config: ClassifyConfig, callbacks) -> dict[str, Any]:
    import torch
    import transformers
    from sklearn.model_selection import train_test_split
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        PrinterCallback,
        Trainer,
        TrainingArguments,
    )

    quiet_libraries()  # "newly initialized classifier weights" is the point here
    transformers.set_seed(config.seed)
    train, held = train_test_split(
        examples, test_size=config.eval_split, stratify=[e.label for e in examples], random_state=config.seed
    )
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    ids = {label: i for i, label in enumerate(labels)}
    model = AutoModelForSequenceClassification.from_pretrained(
        encoder, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=ids
    )
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    args = TrainingArguments(
        output_dir=str(tmp / "trainer"),
        num_train_epochs=config.epochs,
        learning_rate=config.lr,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=64,
        warmup_steps=0.1,  # a fraction of the steps
        logging_steps=5,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_pin_memory=torch.cuda.is_available(),  # pinning is for GPU copies; on CPU it only warns
        seed=config.seed,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=_dataset(train, tokenizer, ids, config.max_length),
        processing_class=tokenizer,
        callbacks=list(callbacks),
    )
    trainer.remove_callback(PrinterCallback)  # it prints every log dict when tqdm is off
    held_set = _dataset(held, tokenizer, ids, config.max_length)
    before = _scores(trainer, held_set, labels)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    after = _scores(trainer, held_set, labels)
    majority = Counter(e.label for e in train).most_common(1)[0][0]
    summary = {
        "base_model": ENCODER,
        "labels": labels,
        "train_examples": len(train),
        "eval_examples": len(held),
        "truncated": sum(len(tokenizer(e.text)["input_ids"]) > config.max_length for e in examples),
        "config": asdict(config),
        "train_seconds": round(seconds, 1),
        "majority_baseline": {"label": majority, "accuracy": sum(e.label == majority for e in held) / len(held)},
        "before": before,
        "after": after,
    }
    trainer.save_model(str(tmp))
    shutil.rmtree(tmp / "trainer", ignore_errors=True)
    (tmp / "training_args.bin").unlink(missing_ok=True)  # a pickle of the arguments; summary.json has them
    (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    _publish(tmp, out)
    return summary


def _dataset(examples: list[Example], tokenizer, ids: dict[str, int], max_length: int):
    from datasets import Dataset

    encoded = tokenizer([e.text for e in examples], truncation=True, max_length=max_length)
    return Dataset.from_dict({**encoded, "labels": [ids[e.label] for e in examples]})


def _scores(trainer, dataset, labels: list[str]) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1 and the confusion matrix (rows: true label, columns: predicted)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    prediction = trainer.predict(dataset)
    truth, guess = prediction.label_ids, prediction.predictions.argmax(-1)
    index = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(truth, guess, labels=index, zero_division=0)
    return {
        "accuracy": float(accuracy_score(truth, guess)),
        "per_class": {
            label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for label, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
        },
        "confusion": confusion_matrix(truth, guess, labels=index).tolist(),
    }


def _publish(tmp: Path, out: Path) -> None:
    """Swap the finished folder into place: OUT is either the old result or the new one, never half of each."""
    old = out.with_name(f".{out.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def _csv_rows(path: Path) -> list[tuple[int, dict]]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            return [(reader.line_num, row) for row in reader]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InvalidRequest(f"{path}: cannot read the CSV file ({exc}).") from None


def _json_rows(path: Path, text_field: str, label_field: str) -> list[tuple[int, dict]]:
    return [(raw.line, raw.data) for raw in read_records(path, f"'{text_field}' and '{label_field}'")]


def _example(path: Path, line: int, row: dict, text_field: str, label_field: str) -> Example:
    values = []
    for name, flag in ((text_field, "--text-field"), (label_field, "--label-field")):
        if name not in row:
            known = ", ".join(repr(k) for k in row if k is not None)
            raise InvalidRequest(
                f"{path}:{line}: {name}: required field is missing (the record has {known}); "
                f"name the right one with {flag}."
            )
        value = row[name]
        if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).strip():
            raise InvalidRequest(f"{path}:{line}: {name}: must be a non-empty string, got {json.dumps(value)}.")
        values.append(str(value).strip())
    return Example(values[0], values[1], line)
