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
    ["loop"],
    ["loop", "run"],
    ["loop", "list"],
    ["loop", "show"],
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


def test_models_json_has_the_tables_facts(home):
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0
    models = {m["name"]: m for m in json.loads(result.stdout)}
    qwen = models["qwen2.5-0.5b-instruct"]
    assert qwen["engine"] == "llamacpp" and qwen["kind"] == "chat" and qwen["available"] is True
    assert round(qwen["size_bytes"] / 1e6) == 491 and isinstance(qwen["context_length"], int)
    assert models["smollm2-priced"]["source"].startswith("package:")


def test_traces_list_and_show_json_read_like_the_api(home):
    from fmstack.core.config import get_settings
    from fmstack.core.store import open_store
    from fmstack.core.store.traces import TraceWriter
    from tests.core.test_store import row

    writer = TraceWriter(open_store(get_settings()))
    for i in range(3):
        writer.write(row(i, app="json-app" if i else "other", latency_ms=100.0 * (i + 1)))
    writer.flush()
    writer.close()
    listed = runner.invoke(app, ["traces", "list", "--app", "json-app", "--json"])
    assert listed.exit_code == 0
    rows = json.loads(listed.stdout)
    assert {r["id"] for r in rows} == {"t-1", "t-2"} and all(r["app"] == "json-app" for r in rows)
    assert {r["latency_ms"] for r in rows} == {200.0, 300.0} and rows[0]["feedback"] == []
    shown = runner.invoke(app, ["traces", "show", "t-2", "--json"])
    assert shown.exit_code == 0 and json.loads(shown.stdout) == next(r for r in rows if r["id"] == "t-2")
    assert json.loads(runner.invoke(app, ["traces", "list", "--status", "error", "--json"]).stdout) == []


def test_every_user_error_is_one_line_and_exit_code_2_whatever_the_command(home):
    """The command groups turn any FmstackError into `error: ...` on stderr: no command catches its own."""
    for args in (["traces", "export", "--format", "csv"], ["eval", "show", "run-nope"], ["prompt", "log", "nope"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and result.stderr.startswith("error: ") and not result.stdout, args
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_options_derived_from_a_config_keep_flag_names_types_and_defaults():
    import dataclasses
    from pathlib import Path

    import typer

    from fmstack.cli.options import FROM_FLAGS, from_config

    @dataclasses.dataclass(frozen=True)
    class Config:
        data: Path
        epochs: float = 1.0
        steps: int | None = None
        lora: bool = True
        merge: bool = False
        modules: tuple[str, ...] = ("q", "v")

    got = []
    tool = typer.Typer()

    @tool.command()
    @from_config("config", Config, {f.name: f"help {f.name}" for f in dataclasses.fields(Config)})
    def run(name: str = typer.Option("x", "--name"), config: Config = FROM_FLAGS) -> None:
        got.append((name, config))

    assert runner.invoke(tool, ["--data", "d", "--no-lora", "--merge", "--modules", "a, b,"]).exit_code == 0
    assert got.pop() == ("x", Config(Path("d"), 1.0, None, False, True, ("a", "b")))
    assert runner.invoke(tool, ["--data", "d", "--epochs", "2.5", "--steps", "7", "--name", "y"]).exit_code == 0
    assert got.pop() == ("y", Config(Path("d"), 2.5, 7, True, False, ("q", "v")))
    assert runner.invoke(tool, ["--epochs", "2"]).exit_code == 2  # --data is required, as the field has no default
    help_text = runner.invoke(tool, ["--help"], terminal_width=200).output
    assert "--lora" in help_text and "--no-lora" in help_text and "--no-merge" not in help_text
    assert "help modules" in help_text and "q,v" in help_text


def test_train_flags_are_the_config_fields():
    """`fmstack train finetune/dpo/classify` have exactly one flag per field of their config."""
    import dataclasses

    from fmstack.model.train.configs import ClassifyConfig, DpoConfig, FinetuneConfig

    for command, config in (("finetune", FinetuneConfig), ("dpo", DpoConfig), ("classify", ClassifyConfig)):
        help_text = runner.invoke(app, ["train", command, "--help"], terminal_width=250).output
        for f in dataclasses.fields(config):
            assert f"--{f.name.replace('_', '-')}" in help_text, (command, f.name)


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
        [sys.executable, "-m", "fmstack", "chat", "--model", "smollm2-135m-instruct", "--max-tokens", "32"],
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
