"""`fmstack ab`: help with an example on every command, the whole life of a route from the command line, and bad
input as one line on stderr with exit code 2, naming what to fix."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from fmstack import cli
from fmstack.cli import app
from fmstack.cli.ab import ab_app
from tests.app.ab.helpers import A, B, add_trace, routes

runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setattr(cli.console, "width", 250)


def ab(*args: str):
    return runner.invoke(app, ["ab", *args])


@pytest.mark.parametrize("command", [[]] + [[c.name] for c in ab_app.registered_commands])
def test_every_ab_command_has_help_with_an_example(command):
    result = runner.invoke(app, ["ab", *command, "--help"], terminal_width=200)
    assert result.exit_code == 0 and "Example: fmstack ab" in result.output


def test_a_route_from_creation_to_rollback(home):
    created = ab("create", "shop", "--variant", f"{A}=90", "--variant", f"{B}=10")
    assert created.exit_code == 0 and f"created shop: {A}=90 {B}=10" in created.output
    [listed] = json.loads(ab("list", "--json").stdout)
    assert listed["name"] == "shop" and [(v["name"], v["weight"]) for v in listed["variants"]] == [(A, 90), (B, 10)]
    assert ab("split", "shop", "-v", f"{A}=50", "-v", f"{B}=50").exit_code == 0
    promoted = ab("promote", "shop", B)
    assert promoted.exit_code == 0 and f"promoted shop: {B}=100" in promoted.output
    rolled = ab("rollback", "shop")
    assert rolled.exit_code == 0 and f"rolled back shop: {A}=50 {B}=50" in rolled.output
    history = json.loads(ab("history", "shop", "--json").stdout)
    assert [(c["action"], c["undoes"]) for c in history] == [("create", None), ("split", None), ("promote", None),
                                                             ("rollback", 3)]
    assert all(c["actor"] for c in history)  # who made each change
    assert ab("delete", "shop").exit_code == 0 and json.loads(ab("list", "--json").stdout) == []


def test_report_as_a_table_and_as_json(home):
    store = routes(home)
    store.create("shop", {A: 90, B: 10})
    for i in range(6):
        add_trace(store.sessions, A, latency=100.0 + i, reviews=(("rejected", "sampled", 5.0),))
        add_trace(store.sessions, B, latency=100.0 + i, reviews=(("approved", "sampled", 5.0),))
    table = ab("report", "shop", "--since", "24h")
    assert table.exit_code == 0, table.output
    assert f"{B} vs {A}: better on approval, +100 pts [100, 100]" in table.output
    assert re.search(r"latency +│ 102 ms \[10\d, 10\d\] n=6", table.output), table.output  # mean of 100…105
    data = json.loads(ab("report", "shop", "--json").stdout)
    assert data["baseline"] == A and data["verdicts"][B].startswith(f"{B} vs {A}: better on approval")
    assert ab("report", "shop", "--since", "7d").exit_code == 0
    gated = ab("promote", "shop", B, "--gate")
    assert gated.exit_code == 2 and "the gate needs 30" in gated.stderr
    assert ab("promote", "shop", B, "--gate", "--min-requests", "5").exit_code == 0


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["create", "shop", "--variant", f"{A}=90", "--variant", f"{B}=20"], "weight: the weights sum to 110"),
        (["create", "shop", "--variant", "nope=100"], "variant: 'nope' is not a chat model"),
        (["create", "shop", "--variant", A], "--variant 'smollm2-135m-instruct': write MODEL=PERCENT"),
        (["create", "shop", "--variant", f"{A}=50", "--variant", f"{A}=50"], "given twice"),
        (["promote", "nope", A], "route: no route 'nope'"),
        (["report", "nope"], "route: no route 'nope'"),
        (["rollback", "nope"], "route: no route 'nope'"),
        (["report", "shop", "--since", "yesterday"], "--since 'yesterday'"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(home, args, words):
    result = ab(*args)
    assert result.exit_code == 2 and result.stderr.startswith("error: ") and not result.stdout, result.output
    assert words in result.stderr and "Traceback" not in result.stderr
    assert routes(home).list() == []  # nothing written


def test_promoting_a_variant_the_route_does_not_have(home):
    routes(home).create("shop", {A: 100})
    result = ab("promote", "shop", B)
    assert result.exit_code == 2 and f"variant: route 'shop' has no variant '{B}'" in result.stderr
    assert routes(home).get("shop").weights == {A: 100}


def test_a_prompt_route_from_the_command_line(home):
    from fmstack.app.prompts import PromptStore

    prompts = PromptStore(routes(home).sessions)
    prompts.save("greet", {"user": "Say hello to {{ name }}.", "params": {"model": A}})
    prompts.save("greet", {"user": "Greet {{ name }} warmly.", "params": {"model": A}})
    created = ab("create", "greet@production", "-v", "greet@1=90", "-v", "greet@v2=10")
    assert created.exit_code == 0 and "created greet@production: greet@1=90 greet@2=10" in created.output
    promoted = ab("promote", "greet@production", "greet@2")
    assert promoted.exit_code == 0 and "promoted greet@production: greet@2=100" in promoted.output
    refused = ab("split", "greet@production", "-v", "greet@1=50", "-v", "greet@3=50")
    assert refused.exit_code == 2 and "variant: " in refused.stderr and "greet" in refused.stderr
    assert routes(home).get("greet@production").weights == {"greet@1": 0, "greet@2": 100}
