"""`fmstack loop run`: the closed loop on a tiny configuration, on the simulated shop app of examples/loop (real
SmolLM2 answers through the gateway, real feedback and reviews in a real SQLite store): end to end to a registered
candidate with an A/B share, "since the last loop", a failed gate that stops with its scores, bad config and apps
(exit 2, file:line), and a killed run that resumes where it stopped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from fmstack.app.ab import RouteStore
from fmstack.app.review.policy import save_policy, settings_from
from fmstack.app.review.queue import decide, enqueue
from fmstack.cli import app
from fmstack.core.config import Settings, get_settings
from fmstack.core.registry import Registry
from fmstack.core.store import open_store
from fmstack.core.store.schema import Trace
from fmstack.core.store.traces import add_feedback
from fmstack.loop import LoopRuns, load_loop_config, run_loop
from fmstack.loop.context import LoopStopped
from tests.conftest import TEST_MODEL, make_home
from tests.model.train.test_base_model import shared_checkpoint

ROOT = Path(__file__).parents[2]
SIMULATE = ROOT / "examples" / "loop" / "simulate.py"
# Setup (SmolLM2 converted once, 24 answers) plus a loop take a few minutes on 2 idle cores; a shared machine is slower.
LONG = 2400
# The flow's gate takes any score (min_delta -1): whether 8 LoRA steps beat the base on ~5 held-out answers is what
# the gate exists to find out, not a promise (CI once saw token F1 -0.012 [-0.115, 0.120]). The gate refusing a
# candidate is tested below with min_delta 1.
TINY = """
data: {formats: [sft, dpo], min_records: 4, holdout: 0.3}
finetune: {steps: 8, lr: 3.0e-3, batch_size: 4, lora_r: 8, max_length: 256}
dpo: {steps: 2, batch_size: 2, max_length: 256}
gate: {metric: token_f1, min_delta: -1.0, min_cases: 2, max_tokens: 32}
export: {quant: q8_0}
ab: {share: 10}
"""


def loop(*args: str):
    return CliRunner().invoke(app, ["loop", *args])


def one_line(output: str) -> str:
    return " ".join(output.split())


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Path:
    """A data dir with SmolLM2's verified Hugging Face conversion shared (converted once per session) and one
    round of the simulated shop-bot: 24 questions answered by SmolLM2, thumbs, corrections and reviews."""
    settings, _ = shared_checkpoint(tmp_path_factory)
    home = make_home(tmp_path_factory.mktemp("loop-home"))
    (home / "models").mkdir()
    (home / "models" / "hf").symlink_to(settings.models_dir / "hf")
    env = os.environ | {"FMSTACK_HOME": str(home), "FMSTACK_THREADS": "2"}
    env.pop("FMSTACK_DATABASE_URL", None)
    done = subprocess.run([sys.executable, str(SIMULATE), "--app", "shop-bot", "--max-tokens", "32"], env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "requests 24" in done.stdout
    return home


@pytest.fixture()
def at_shop(shop, monkeypatch) -> Path:
    monkeypatch.setenv("FMSTACK_HOME", str(shop))
    monkeypatch.setenv("FMSTACK_THREADS", "2")
    monkeypatch.delenv("FMSTACK_DATABASE_URL", raising=False)
    return shop


@pytest.mark.slow
@pytest.mark.timeout(LONG)
def test_the_loop_runs_end_to_end_and_the_next_one_starts_where_it_ended(at_shop, tmp_path):
    config = tmp_path / "loop.yaml"
    config.write_text(TINY)
    result = loop("run", "shop-bot", "--base", TEST_MODEL, "--config", str(config))
    assert result.exit_code == 0, result.output
    text = one_line(result.output)
    for step in ("data", "finetune", "export", "gate", "register", "ab"):
        assert f" {step} " in f" {text} ", step
    assert "passed on" in text and "token_f1 production" in text
    runs = LoopRuns(open_store(get_settings())).list("shop-bot")
    assert [r.status for r in runs] == ["done"] and runs[0].step == "ab"
    run = runs[0]
    candidate = run.candidate
    assert candidate == f"shop-bot-loop-{run.id}"
    spec = Registry(get_settings()).get(candidate)
    assert spec.engine == "llamacpp" and spec.source.endswith(".q8_0.gguf") and spec.available()
    route = RouteStore.open().get(TEST_MODEL)
    assert route.weights == {TEST_MODEL: 90, candidate: 10}
    gate = run.steps["gate"]
    assert gate["passed"] and gate["production"] == TEST_MODEL and gate["cases"] >= 2
    f1 = {s["metric"]: s for s in gate["scores"]}["token_f1"]
    assert f1["delta"] == pytest.approx(f1["candidate"] - f1["production"], abs=1e-3) and f1["n"] == gate["cases"]
    assert run.until is not None and run.steps["data"]["sft_records"] >= 4
    # the corrections are preference pairs too: SFT, then DPO from its weights, and the candidate is DPO's
    assert run.steps["data"]["dpo_records"] >= 1 and run.steps["finetune"]["dpo"]["steps"] == 2
    assert run.steps["finetune"]["checkpoint"].endswith("dpo/model")
    # no traffic since: the next loop has nothing to train on and says so (exit 1, nothing registered)
    again = loop("run", "shop-bot", "--base", TEST_MODEL, "--config", str(config))
    assert again.exit_code == 1, again.output
    assert "0 training record(s)" in one_line(again.output) and "since" in again.output
    assert LoopRuns(open_store(get_settings())).list("shop-bot")[0].status == "stopped"


@pytest.mark.slow
@pytest.mark.timeout(LONG)
def test_a_failed_gate_stops_the_loop_with_the_scores(at_shop, tmp_path):
    config = tmp_path / "loop.yaml"
    strict = TINY.replace("min_delta: -1.0", "min_delta: 1.0")
    config.write_text(strict.replace("formats: [sft, dpo]", "window: all, formats: [sft]"))
    before = RouteStore.open().list()
    result = loop("run", "shop-bot", "--base", TEST_MODEL, "--config", str(config), "--json")
    assert result.exit_code == 1, result.output
    assert "gate failed" in one_line(result.output) and "under gate.min_delta +1.000" in one_line(result.output)
    body = json.loads(result.stdout)
    assert body["status"] == "gate-failed" and body["run"]["step"] == "gate"
    scores = {s["metric"]: s for s in body["steps"]["gate"]["scores"]}
    assert {"production", "candidate", "delta", "low", "high", "n"} <= set(scores["token_f1"])
    assert body["run"]["candidate"] not in Registry(get_settings()).specs  # never registered
    assert RouteStore.open().list() == before  # no A/B change


# ---------- bad input, and a killed run (no model needed) ----------


def add_judged(sessions, app_name: str, n: int, times: int = 1) -> None:
    """`n` questions of `app_name`, each asked `times` times (a random trace id each, as the gateway gives), each
    answer corrected by its user and edited by a reviewer."""
    with sessions.begin() as s:
        policy = save_policy(s, Registry(get_settings()), app_name, settings_from({}), "walk")
        for i in [i for i in range(n) for _ in range(times)]:
            trace_id = uuid.uuid4().hex
            request = {"model": TEST_MODEL, "messages": [{"role": "user", "content": f"question {i}?"}]}
            s.add(Trace(id=trace_id, status="ok", status_code=200, endpoint="chat.completions",
                        model=TEST_MODEL, app=app_name, request=request, response_text="no idea"))  # fmt: skip
            s.flush()
            add_feedback(s, trace_id, -1, f"answer {i}", None)
            item = enqueue(s, policy, trace_id, "no idea", "thumbs-down")
            decide(s, item.id, "edit", "reviewer", text=f"answer {i}", seconds=3)


@pytest.mark.parametrize(
    ("yaml_text", "args", "message"),
    [
        ("gate:\n  metric: token_f1\n  bogus: 1\n", ("--base", TEST_MODEL), "loop.yaml:3: gate.bogus: unknown field"),
        ("gate:\n  metric: nope\n", ("--base", TEST_MODEL), "loop.yaml:2: gate.metric: unknown metric 'nope'"),
        ("ab:\n  share: 90\n", ("--base", TEST_MODEL), "loop.yaml:2: ab.share: Input should be less than or equal"),
        ("data: [1, 2]\n", ("--base", TEST_MODEL), "loop.yaml:1: data: Input should be a valid dictionary"),
        ("base: nope\n", (), "loop.yaml:1: base: 'nope' is not a local chat model"),
        ("{}\n", ("--base", "all-minilm-l6-v2"), "--base: 'all-minilm-l6-v2' is not a local chat model"),
        ("{}\n", (), "--base: give the model to fine-tune"),
    ],
)
def test_bad_config_exits_2_naming_the_file_line_and_field(home, tmp_path, yaml_text, args, message):
    add_judged(open_store(get_settings()), "tiny", 2)
    path = tmp_path / "loop.yaml"
    path.write_text(yaml_text)
    result = loop("run", "tiny", "--config", str(path), *args)
    assert result.exit_code == 2, result.output
    assert message in one_line(result.output)
    assert LoopRuns(open_store(get_settings())).list() == []  # nothing recorded


def test_an_unknown_app_or_config_file_exits_2(home, tmp_path):
    add_judged(open_store(get_settings()), "tiny", 1)
    result = loop("run", "nobody", "--base", TEST_MODEL)
    assert result.exit_code == 2 and "no traces of app 'nobody'" in one_line(result.output)
    assert "apps with traces: tiny" in one_line(result.output)
    result = loop("run", "tiny", "--base", TEST_MODEL, "--config", str(tmp_path / "missing.yaml"))
    assert result.exit_code == 2 and "missing.yaml: no such file" in one_line(result.output)


def test_a_killed_run_says_where_it_stopped_and_resumes_from_there(home, monkeypatch):
    """The fine-tune is replaced by a kill (Ctrl-C) and then by a stop: the data step runs once, the row says where
    each attempt ended, and --resume skips what finished."""
    from fmstack.loop import runner

    settings = Settings(home=home)
    sessions = open_store(settings)
    add_judged(sessions, "tiny", 12)
    lines: list[str] = []

    def report(step: str, message: str) -> None:
        lines.append(f"{step}: {message}")

    def killed(ctx):
        raise KeyboardInterrupt

    steps = dict(runner.STEPS)
    monkeypatch.setattr(runner, "STEPS", [(n, killed if n == "finetune" else f) for n, f in steps.items()])
    config = load_loop_config(None)
    config.config.data.min_records, config.config.gate.min_cases = 4, 2
    with pytest.raises(KeyboardInterrupt):
        run_loop("tiny", TEST_MODEL, config, settings, sessions, report)
    (first,) = LoopRuns(sessions).list("tiny")
    assert (first.status, first.step) == ("interrupted", "finetune") and set(first.steps) == {"data"}
    result = loop("list", "tiny", "--json")
    assert json.loads(result.stdout)[0]["status"] == "interrupted"

    def stopped(ctx):
        raise LoopStopped("stopped", "out of time")

    monkeypatch.setattr(runner, "STEPS", [(n, stopped if n == "finetune" else f) for n, f in steps.items()])
    lines.clear()
    resumed = run_loop("tiny", None, config, settings, sessions, report, resume=True)
    assert resumed.run.id == first.id and resumed.status == "stopped" and resumed.reason == "out of time"
    assert "data: finished in an earlier attempt" in lines
    assert any(line.startswith(f"loop: resuming loop {first.id}") for line in lines)
    with pytest.raises(Exception, match="no interrupted or failed loop"):
        run_loop("tiny", None, config, settings, sessions, report, resume=True)


def test_a_question_asked_twice_is_held_out_both_times_and_in_every_store(home, monkeypatch):
    """The gate's held-out answers are chosen by question, not by trace id (random): the same questions are held
    out in two stores with the same reviews, a question's repeats go together, and none of them is trained on (the
    export keeps one record of a question asked twice with one correction)."""
    from fmstack.loop import runner

    def stopped(ctx):
        raise LoopStopped("stopped", "the data step is enough")

    monkeypatch.setattr(runner, "STEPS", [(n, stopped if n == "finetune" else f) for n, f in runner.STEPS])
    held = []
    for where in (home, make_home(home / "another-store")):
        settings = Settings(home=where)
        sessions = open_store(settings)
        add_judged(sessions, "twice", 20, times=2)
        config = load_loop_config(None)
        config.config.data.min_records, config.config.gate.min_cases = 4, 2
        run_loop("twice", TEST_MODEL, config, settings, sessions, lambda step, message: None)
        data = LoopRuns(sessions).list("twice")[0].steps["data"]
        questions = [c["messages"][0]["content"] for c in yaml.safe_load(Path(data["gate_suite"]).read_text())["cases"]]
        assert questions and all(questions.count(q) == 2 for q in questions)
        trained = Path(data["sft_file"]).read_text()
        assert data["sft_records"] == 20 - len(set(questions)) and not any(q in trained for q in questions)
        held.append(sorted(set(questions)))
    assert held[0] == held[1] and len(held[0]) < 20


def test_two_loops_of_one_app_started_at_once_cannot_both_run(home):
    """The check before a start reads the store before either run exists; the store's unique index on running rows
    refuses the second insert, whichever order the two processes reach it in."""
    from fmstack.core.errors import FmstackError

    sessions = open_store(Settings(home=home))
    runs = LoopRuns(sessions)
    first = runs.start("shop", TEST_MODEL, None, {}, str(home))
    with pytest.raises(FmstackError, match="another loop of 'shop'"):
        runs.start("shop", TEST_MODEL, None, {}, str(home))
    assert [r.id for r in runs.list("shop")] == [first.id]  # nothing half-written
    runs.start("other-app", TEST_MODEL, None, {}, str(home))  # other apps are not held up
    runs.finish(first.id, "done", "ab", None)
    assert runs.start("shop", TEST_MODEL, None, {}, str(home)).id > first.id
