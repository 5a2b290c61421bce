"""`fmstack eval` end to end with real models: exit codes as a CI gate, calibration, scoring stored traces; runs,
results and metrics as JSON for scripts."""

import asyncio
import json
import re

import httpx
import pytest
from typer.testing import CliRunner

from fmstack import cli
from fmstack.cli import app
from tests.conftest import TEST_MODEL

runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setattr(cli.console, "width", 200)


class Paris:
    """A generator that answers every case "Paris": right for France, wrong for Japan."""

    async def generate(self, model, messages, params, run_id=None):
        from fmstack.app.eval.generate import Generated

        return Generated("Paris", 5.0, 12, 1, 0.0)


def test_list_show_and_metrics_print_json_for_scripts(home, tmp_path):
    from fmstack.app.eval.runner import Runner, RunOptions
    from fmstack.app.eval.suite import load_suite
    from fmstack.core.config import get_settings
    from fmstack.core.store import open_store

    suite = tmp_path / "s.yaml"
    suite.write_text(
        "name: capitals\nmetrics: [{name: exact_match, threshold: 1}]\ncases:\n"
        "  - {id: fr, input: 'Capital of France?', reference: Paris}\n"
        "  - {id: jp, input: 'Capital of Japan?', reference: Tokyo}\n"
    )
    sessions = open_store(get_settings())
    data = asyncio.run(Runner(sessions, Paris()).run(load_suite(suite, sessions), RunOptions(["m"])))

    (listed,) = json.loads(runner.invoke(app, ["eval", "list", "--json"]).stdout)
    assert listed["id"] == data.id and listed["suite"] == "capitals" and listed["models"] == ["m"]
    assert listed["results"] == 2 and listed["status"] == "done" and listed["prompts"] == []
    shown = json.loads(runner.invoke(app, ["eval", "show", data.id, "--json"]).stdout)
    assert shown["id"] == data.id and shown["variants"] == ["m"]
    (cell,) = shown["summary"]
    assert cell["variant"] == "m" and cell["passed"] == 1 and cell["judged"] == 2 and cell["pass_rate"] == 0.5
    scores = {r["case_id"]: r["scores"][cell["label"]]["passed"] for r in shown["rows"]}
    assert scores == {"fr": True, "jp": False}
    metrics = {m["name"]: m for m in json.loads(runner.invoke(app, ["eval", "metrics", "--json"]).stdout)}
    assert metrics["exact_match"]["description"] and "reference" in metrics["exact_match"]["needs"]


def test_broken_suite_exits_2_naming_file_and_line(home, tmp_path):
    suite = tmp_path / "broken.yaml"
    suite.write_text("name: x\ncases:\n  - input: hi\n    referense: typo\n")
    result = runner.invoke(app, ["eval", "run", str(suite)])
    assert result.exit_code == 2
    assert re.search(r"broken.yaml:4: cases\[0\].referense: unknown field", result.output)


@pytest.mark.slow
def test_threshold_failure_exits_1_and_runs_are_listed_and_reported(home, tmp_path):
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "name: gate\nparams: {max_tokens: 8}\nmetrics: [{name: regex, pattern: '^ZZZ$', threshold: 1}]\n"
        "cases:\n  - {input: 'Say hello.'}\n  - {input: 'Say bye.'}\n"
    )
    result = runner.invoke(app, ["eval", "run", str(suite), "-m", TEST_MODEL, "--report", str(tmp_path / "r.html")])
    assert result.exit_code == 1, result.output
    assert "threshold failed" in result.output and "0%" in result.output
    run_id = re.search(r"run (run-[0-9a-f]{12})", result.output).group(1)
    listed = runner.invoke(app, ["eval", "list"])
    assert run_id in listed.output and "gate" in listed.output
    assert "data:image/png;base64" in (tmp_path / "r.html").read_text()
    shown = runner.invoke(app, ["eval", "show", run_id])
    assert shown.exit_code == 0 and "regex" in shown.output


@pytest.mark.slow
def test_calibrate_a_judge_on_labelled_answers(home, tmp_path):
    labels = tmp_path / "labels.jsonl"
    rows = [
        {"question": "Capital of France?", "answer": "Paris", "reference": "Paris", "label": "correct"},
        {"question": "Capital of France?", "answer": "Lyon", "reference": "Paris", "label": "incorrect"},
        {"question": "2+2?", "answer": "4", "reference": "4", "label": "correct"},
        {"question": "2+2?", "answer": "5", "reference": "4", "label": "incorrect"},
    ]
    labels.write_text("\n".join(json.dumps(r) for r in rows))
    args = ["eval", "calibrate", "--judge", TEST_MODEL, "--metric", "correctness", "--labels", str(labels)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "kappa" in result.output.lower() and "accuracy" in result.output.lower()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "a"}\n')
    result = runner.invoke(app, ["eval", "calibrate", "--judge", TEST_MODEL, "--labels", str(bad)])
    assert result.exit_code == 2 and "bad.jsonl:1: missing field 'label'" in result.output


@pytest.mark.slow
def test_score_stored_traces_shows_on_trace_and_in_metrics(server):
    r = httpx.post(
        f"{server.base}/v1/chat/completions",
        timeout=60,
        headers={"X-Fmstack-App": "scored-app"},
        json={"model": TEST_MODEL, "messages": [{"role": "user", "content": "What is a cat?"}], "max_tokens": 24},
    )
    trace_id = r.json()["id"]
    assert httpx.get(f"{server.base}/api/traces/{trace_id}").status_code == 200  # committed by the server
    result = runner.invoke(
        app,
        ["eval", "score", "--traces", "--app", "scored-app", "--metric", "answer_relevance"],
        env={"FMSTACK_HOME": str(server.home)},
    )
    assert result.exit_code == 0, result.output
    assert trace_id in result.output
    scores = httpx.get(f"{server.base}/api/traces/{trace_id}").json()["scores"]
    assert len(scores) == 1 and scores[0]["metric"] == "answer_relevance" and 0 < scores[0]["value"] <= 1
    metrics = httpx.get(f"{server.base}/metrics").text
    assert re.search(
        r'fmstack_trace_score_mean\{metric="answer_relevance",model="smollm2-135m-instruct"\} 0\.\d+', metrics
    )
