"""The `fmstack` command: help with examples everywhere, models, traces list/show/export, clear errors."""

import json
import subprocess
import sys

import httpx
import pytest
from typer.testing import CliRunner

from fmstack import __version__, cli
from fmstack.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    """Rich sizes tables to the terminal; tests read whole rows."""
    monkeypatch.setattr(cli.console, "width", 250)


COMMANDS = [
    [],
    ["up"],
    ["chat"],
    ["models"],
    ["models", "convert"],
    ["traces"],
    ["traces", "list"],
    ["traces", "show"],
    ["traces", "export"],
    ["data"],
    ["data", "run"],
    ["data", "clean"],
    ["data", "dedup"],
    ["data", "tokenize"],
    ["data", "stats"],
    ["rag"],
    ["rag", "ingest"],
    ["rag", "list"],
    ["rag", "delete"],
    ["rag", "search"],
    ["rag", "ask"],
    ["rag", "eval"],
    ["prompt"],
    ["prompt", "create"],
    ["prompt", "edit"],
    ["prompt", "show"],
    ["prompt", "list"],
    ["prompt", "alias"],
    ["prompt", "render"],
    ["prompt", "diff"],
    ["prompt", "log"],
    ["prompt", "stats"],
]


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) or "fmstack" for c in COMMANDS])
def test_every_command_has_help_with_an_example(command):
    result = runner.invoke(app, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0 and "Example: fmstack" in result.output


def test_models_lists_engines_availability_and_size(home):
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0
    line = next(x for x in result.output.splitlines() if "qwen2.5-0.5b-instruct" in x)
    assert "llamacpp" in line and "yes" in line and "491 MB" in line
    assert "smollm2-priced" in result.output and "sentence-transformers" in result.output


def test_bad_registry_is_a_clear_error_with_exit_code_2(home):
    (home / "models.toml").write_text("[models.x\n")
    result = subprocess.run(
        [sys.executable, "-m", "fmstack", "models"],
        capture_output=True,
        text=True,
        env={"FMSTACK_HOME": str(home), "PATH": ""},
    )
    assert result.returncode == 2 and "models.toml" in result.stderr and "Traceback" not in result.stderr


def test_unknown_trace_is_exit_code_2(home):
    result = runner.invoke(app, ["traces", "show", "nope"])
    assert result.exit_code == 2 and "No trace" in result.output


@pytest.mark.slow
def test_traces_list_show_export_against_a_server_store(server, tmp_path):
    r = httpx.post(
        f"{server.base}/v1/chat/completions",
        timeout=60,
        headers={"X-Fmstack-App": "cli-test"},
        json={"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
    )
    trace_id = r.json()["id"]
    httpx.post(f"{server.base}/v1/feedback", json={"trace_id": trace_id, "rating": 1})
    env = {"FMSTACK_HOME": str(server.home)}
    listed = runner.invoke(app, ["traces", "list", "--app", "cli-test"], env=env)
    assert listed.exit_code == 0 and trace_id in listed.output and "+1" in listed.output
    shown = runner.invoke(app, ["traces", "show", trace_id], env=env)
    assert shown.exit_code == 0 and json.loads(shown.output)["id"] == trace_id
    out = tmp_path / "t.jsonl"
    exported = runner.invoke(
        app, ["traces", "export", "--format", "jsonl", "-o", str(out), "--app", "cli-test"], env=env
    )
    assert exported.exit_code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["id"] for row in rows] == [trace_id] and rows[0]["feedback"][0]["rating"] == 1


@pytest.mark.slow
def test_terminal_chat_streams_and_handles_commands(home):
    script = "/system Answer in one short sentence.\nHello!\n/model smollm2-priced\nWhat is 2+2?\n/quit\n"
    result = subprocess.run(
        [sys.executable, "-m", "fmstack", "chat", "--model", "smollm2-135m-instruct"],
        input=script,
        capture_output=True,
        text=True,
        timeout=300,
        env={"FMSTACK_HOME": str(home), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("assistant>") == 2 and "model: smollm2-priced" in result.stdout
    traces = runner.invoke(app, ["traces", "export"], env={"FMSTACK_HOME": str(home)}).output.splitlines()
    rows = [json.loads(line) for line in traces]
    assert {r["model"] for r in rows} == {"smollm2-135m-instruct", "smollm2-priced"}
    assert all(r["app"] == "fmstack-chat" and r["request"]["messages"][0]["role"] == "system" for r in rows)
