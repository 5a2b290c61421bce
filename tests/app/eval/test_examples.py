"""The example suites in examples/eval: they load, the smoke suite runs end to end through the CLI (and a re-run
comes entirely from the cache), and a real model's code passes real unit tests."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fmstack.app.eval.suite import load_suite

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "eval"
SUITES = sorted(EXAMPLES.glob("*.yaml"))
JUDGE_METRICS = {"correctness", "faithfulness", "rubric", "pairwise", "context_recall"}


def test_the_examples_are_there():
    names = {p.name for p in SUITES}
    assert {"capitals.yaml", "wiki_qa.yaml", "python_coding.yaml", "news_summary.yaml"} <= names
    assert (EXAMPLES / "README.md").exists()


@pytest.mark.parametrize("path", SUITES, ids=lambda p: p.stem)
def test_every_example_suite_loads(path: Path):
    suite = load_suite(path)
    assert suite.name == path.stem
    assert suite.cases
    for case, metrics in suite.cases:
        assert case.messages and case.messages[-1]["role"] == "user"
        assert "{{" not in case.messages[-1]["content"]  # every template variable was filled in
        assert metrics
        if any(m.name in JUDGE_METRICS for m in metrics):
            assert suite.spec.judge.get("model"), "a suite with judge metrics names its judge"
        if any("tests" in m.requires for m in metrics):
            assert case.tests
        if any("reference" in m.requires for m in metrics):
            assert case.references


def test_wiki_qa_cases_carry_their_passage_and_source():
    suite = load_suite(EXAMPLES / "wiki_qa.yaml")
    for case, _ in suite.cases:
        (passage,) = case.context
        assert passage in case.question  # the passage the judge checks against is the one the model was given
        assert len(passage.split()) <= 150
        assert any(r.casefold() in passage.casefold() for r in case.references)
        assert case.metadata["article"]


def test_python_coding_samples_three_answers_at_a_temperature():
    suite = load_suite(EXAMPLES / "python_coding.yaml")
    pass_at_k = next(m for m in suite.metrics if m.name == "pass_at_k")
    assert (pass_at_k.k, pass_at_k.samples) == (1, 3)
    assert suite.spec.params["temperature"] > 0  # identical samples would make pass@k from n=3 pointless


def test_judge_labels_are_balanced_and_complete():
    rows = [json.loads(line) for line in (EXAMPLES / "judge_labels.jsonl").read_text().splitlines() if line]
    assert len(rows) >= 30
    assert all({"question", "answer", "reference", "label"} <= row.keys() for row in rows)
    labels = [row["label"] for row in rows]
    assert set(labels) == {"correct", "incorrect"}
    assert labels.count("correct") == labels.count("incorrect")


def test_sources_are_verbatim_when_gensim_is_installed():
    pytest.importorskip("gensim")
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_sources", EXAMPLES / "check_sources.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.check_wiki(EXAMPLES / "wiki_qa.yaml") == []
    assert module.check_news(EXAMPLES / "news_summary.yaml") == []


@pytest.mark.slow
def test_capitals_runs_through_the_cli_and_reruns_from_the_cache(tmp_path):
    from fmstack.cli import app

    runner = CliRunner()
    env = {"FMSTACK_HOME": str(tmp_path), "COLUMNS": "200"}
    args = ["eval", "run", str(EXAMPLES / "capitals.yaml"), "-m", "smollm2-135m-instruct"]

    first = runner.invoke(app, args, env=env)
    assert first.exit_code == 0, first.output  # SmolLM2 names at least 3 of the 5 capitals: the gate passes
    assert "capitals" in first.output and "contains≥1" in first.output
    assert re.search(r"run run-[0-9a-f]{12} · 5 results \(0 from cache\)", first.output), first.output

    again = runner.invoke(app, args, env=env)
    assert again.exit_code == first.exit_code, again.output
    assert re.search(r"· 5 results \(5 from cache\)", again.output), again.output


@pytest.mark.slow
def test_a_real_model_writes_code_that_passes_real_tests(tmp_path, monkeypatch):
    from fmstack.app.eval.generate import LocalGenerator
    from fmstack.app.eval.runner import Runner, RunOptions
    from fmstack.app.eval.suite import Suite
    from fmstack.gateway import Gateway

    monkeypatch.setenv("FMSTACK_HOME", str(tmp_path))
    monkeypatch.delenv("FMSTACK_DATABASE_URL", raising=False)
    full = load_suite(EXAMPLES / "python_coding.yaml")
    # Three cases, the first answer only (functional): pass@k's extra samples would triple the time.
    cases = [(case, [m for m in metrics if m.name == "functional"]) for case, metrics in full.cases[:3]]
    suite = Suite(full.spec, full.path, cases)

    gateway = Gateway.open()
    try:
        runner = Runner(gateway.sessions, LocalGenerator(gateway))
        data = asyncio.run(runner.run(suite, RunOptions(["qwen2.5-0.5b-instruct"], concurrency=1)))
    finally:
        gateway.close()

    assert [r.error for r in data.rows] == [None, None, None]
    scores = [r.scores["functional≥1"] for r in data.rows]
    assert all(s.error is None for s in scores), scores
    answers = [(r.output, s.reason) for r, s in zip(data.rows, scores, strict=True)]
    assert any(s.value and s.value > 0 for s in scores), answers
