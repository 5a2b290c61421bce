"""`fmstack review …`, `fmstack eval suite from-reviews` and `fmstack train judge` from the command line: help with
an example, the queue worked from the terminal, and user errors as one line with exit code 2."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from fmstack.cli import app
from fmstack.core.config import get_settings
from fmstack.core.store import open_store
from fmstack.core.store.schema import Trace

runner = CliRunner()
COMMANDS = [
    ["review"],
    *(["review", c] for c in ("policy", "move", "history", "list", "next", "approve", "edit", "reject", "skip")),
    ["review", "assign"],
    ["eval", "suite"],
    ["eval", "suite", "from-reviews"],
    ["train", "judge"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_every_command_has_help_with_an_example(command):
    result = runner.invoke(app, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0 and "Example: fmstack" in result.output


def run(*args: str) -> str:
    result = runner.invoke(app, list(args), terminal_width=200, env={"FMSTACK_REVIEWER": "alice"})
    assert result.exit_code == 0, result.output
    return result.output


def fail(*args: str) -> str:
    result = runner.invoke(app, list(args), terminal_width=200, env={"FMSTACK_REVIEWER": "alice"})
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return result.output


def answers(*pairs: tuple[str, str]) -> None:
    with open_store(get_settings()).begin() as s:
        for i, (question, answer) in enumerate(pairs):
            s.add(
                Trace(
                    id=f"t{i}",
                    endpoint="chat.completions",
                    app="shop",
                    status="ok",
                    status_code=200,
                    request={"messages": [{"role": "user", "content": question}]},
                    response_text=answer,
                )
            )


def test_the_queue_from_the_terminal(home, tmp_path):
    out = run("review", "policy", "shop", "--stage", "walk", "--share", "1", "--bar", "walk.min_reviewed=2")
    assert "shop is in walk" in out and "Not ready for run yet" in out
    answers(("Capital of France?", "Paris"), ("Capital of Peru?", "Quito"), ("2+2?", "5"))
    from fmstack.app.review.policy import get_policy
    from fmstack.app.review.queue import enqueue

    with open_store(get_settings()).begin() as s:
        policy = get_policy(s, "shop")
        for i, answer in enumerate(("Paris", "Quito", "5")):
            enqueue(s, policy, f"t{i}", answer, "sampled")

    first = json.loads(run("review", "next", "--app", "shop", "--json"))
    assert first["trace"]["messages"][0]["content"] == "Capital of France?" and first["opened_by"] == "alice"
    assert "Capital of France?" in run("review", "next")  # opened by alice: still hers
    run("review", "approve", str(first["id"]))
    run("review", "edit", "2", "--text", "Lima")
    assert "review 3: rejected" in run("review", "reject", "3", "--reason", "wrong sum", "--reviewer", "bob")
    listed = json.loads(run("review", "list", "--app", "shop", "--json"))
    assert [(i["status"], i["reviewer"]) for i in listed] == [
        ("rejected", "bob"),
        ("edited", "alice"),
        ("approved", "alice"),
    ]
    report = json.loads(run("review", "policy", "shop", "--json"))
    walk = next(s for s in report["stages"] if s["stage"] == "walk")
    assert walk["reviewed"] == 3 and walk["approval_rate"] == pytest.approx(1 / 3)
    bars = {b["bar"]: b["met"] for b in walk["bars"]}
    assert bars == {"min_reviewed": True, "min_approval": False, "min_kappa": False} and report["ready"] is False
    assert "Nothing to review." in run("review", "next")

    suite = tmp_path / "suite.yaml"
    assert "wrote 2 cases" in run("eval", "suite", "from-reviews", "shop", "-o", str(suite))
    assert "Lima" in suite.read_text()

    assert "approved by alice" in fail("review", "approve", "1")
    assert "give 'shop' a judge first" in fail("review", "move", "shop", "run", "--force")
    run("review", "policy", "shop", "--judge", "smollm2-135m-instruct")
    assert "min_approval 0.95 (now 0.333)" in fail("review", "move", "shop", "run")
    run("review", "move", "shop", "crawl")
    history = json.loads(run("review", "history", "shop", "--json"))
    assert [(m["from"], m["to"]) for m in history] == [(None, "walk"), ("walk", "crawl")]


def test_bad_input_is_one_line_and_exit_2(home):
    assert "no-such-model" in fail("review", "policy", "shop", "--judge", "no-such-model")
    assert "No review policy for app 'shop'" in fail("review", "policy", "shop")  # nothing was half-written
    assert "'share'" in fail("review", "policy", "shop", "--share", "3")
    assert "STAGE.BAR=NUMBER" in fail("review", "policy", "shop", "--bar", "crawl.min_approval")
    assert "No review policy" in fail("review", "list", "--app", "nope")
    assert "No review item 7" in fail("review", "approve", "7")
    assert "--text or --file" in fail("review", "edit", "7")
    assert "No review policy" in fail("eval", "suite", "from-reviews", "nope", "-o", "x.yaml")
