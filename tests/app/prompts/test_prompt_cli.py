"""`fmstack prompt …` end to end on a real store: create, edit twice, roll back by alias, show, list, render (exit 2
naming a missing variable), diff, log, stats; `traces list --prompt` filters by prompt version."""

import json
import textwrap

import pytest
from typer.testing import CliRunner

from fmstack import cli
from fmstack.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setattr(cli.console, "width", 250)


def run(*args: str, code: int = 0) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result.output


def test_create_edit_alias_rollback_render_diff(home, tmp_path):
    out = run(
        "prompt",
        "create",
        "capitals",
        "--system",
        "Answer with the city only.",
        "--user",
        "Capital of {{ country }}?",
        "--param",
        "temperature=0",
        "--param",
        "max_tokens=16",
        "--note",
        "first",
    )
    assert "created capitals@1 (variables: country)" in out
    out = run(
        "prompt",
        "create",
        "capitals",
        "--system",
        "Answer with the city only.",
        "--user",
        "Capital of {{ country }}?",
        "--param",
        "temperature=0",
        "--param",
        "max_tokens=16",
    )
    assert "unchanged: identical to the latest version capitals@1; no new version was stored" in out
    out = run("prompt", "create", "capitals", "--user", "Something else", code=2)
    assert "already exists" in out and "fmstack prompt edit capitals" in out
    run("prompt", "alias", "capitals", "production", "1")

    # edit twice: flags, then a file with few-shot examples
    out = run("prompt", "edit", "capitals", "--user", "What is the capital of {{ country }}?", "--note", "clearer")
    assert "created capitals@2" in out
    file = tmp_path / "v3.yaml"
    file.write_text(
        textwrap.dedent("""\
        system: You are a geography teacher. Answer with the city only.
        user: "What is the capital of {{ country }}?"
        examples:
          - {user: "What is the capital of Peru?", assistant: Lima}
        params: {temperature: 0, max_tokens: 8, model: smollm2-135m-instruct}
        note: few-shot
    """)
    )
    assert "created capitals@3" in run("prompt", "edit", "capitals", "--file", str(file))
    assert "unchanged" in run("prompt", "edit", "capitals", "--file", str(file))
    assert "capitals@production: version 1 → 3" in run("prompt", "alias", "capitals", "production", "latest")
    # roll back: move the alias back
    assert "capitals@production: version 3 → 1" in run("prompt", "alias", "capitals", "production", "1")
    assert "already points at version 1" in run("prompt", "alias", "capitals", "production", "v1")

    shown = run("prompt", "show", "capitals@production")
    assert "capitals@1" in shown and "aliases: production" in shown and "Capital of {{ country }}?" in shown
    as_json = json.loads(run("prompt", "show", "capitals", "--json"))
    assert as_json["version"] == 3 and as_json["note"] == "few-shot" and as_json["params"]["max_tokens"] == 8
    listed = run("prompt", "list")
    row = next(line for line in listed.splitlines() if "capitals" in line)
    assert " 3 " in row and "production→1" in row
    (summary,) = json.loads(run("prompt", "list", "--json"))
    assert summary["name"] == "capitals" and summary["latest_version"] == 3 and summary["versions"] == 3
    assert summary["aliases"] == {"production": 1}

    messages = json.loads(run("prompt", "render", "capitals@3", "--var", "country=France"))
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[-1]["content"] == "What is the capital of France?"
    missing = run("prompt", "render", "capitals@production", code=2)
    assert "Missing variable 'country'" in missing and "capitals@1" in missing

    diff = run("prompt", "diff", "capitals@production", "capitals@2")
    assert "--- capitals@1" in diff and "+++ capitals@2" in diff
    assert "-Capital of {{ country }}?" in diff and "+What is the capital of {{ country }}?" in diff
    assert "same content" in run("prompt", "diff", "capitals@1", "capitals@production")

    log = run("prompt", "log", "capitals")
    assert "version 2 saved: clearer" in log and "production → 3 (was 1)" in log and "production → 1 (was 3)" in log


def test_user_errors_exit_2_with_one_line(home, tmp_path):
    assert "No prompt named 'nope'" in run("prompt", "show", "nope", code=2)
    assert "template error on line 1" in run("prompt", "create", "x", "--user", "{{ oops", code=2)
    assert "unknown field 'params.temprature'" in run(
        "prompt", "create", "x", "--user", "hi", "-p", "temprature=0", code=2
    )
    assert "KEY=VALUE" in run("prompt", "create", "x", "--user", "hi", "-p", "temperature", code=2)
    run("prompt", "create", "x", "--user", "hi")
    assert "Say what changes" in run("prompt", "edit", "x", code=2)
    bad = tmp_path / "bad.yaml"
    bad.write_text("user: [unclosed\n")
    assert "bad.yaml:2: not valid YAML" in run("prompt", "edit", "x", "--file", str(bad), code=2)
    bad.write_text("user: hi\nsytem: typo\n")
    assert "bad.yaml:2: sytem: unknown field" in run("prompt", "edit", "x", "--file", str(bad), code=2)
    assert "not a valid alias" in run("prompt", "alias", "x", "Prod", "1", code=2)
    assert "has no version 5" in run("prompt", "alias", "x", "prod", "5", code=2)


def test_traces_list_filters_and_stats_group_by_prompt_version(home):
    from fmstack.app.prompts import PromptStore
    from fmstack.core.store.traces import TraceWriter
    from tests.core.test_store import row

    store = PromptStore.open()
    store.save("capitals", {"user": "Capital of {{ country }}?"})
    store.save("capitals", {"user": "What is the capital of {{ country }}?"})
    store.set_alias("capitals", "production", 2)
    writer = TraceWriter(store.sessions)
    for i, version in enumerate(["1", "2", "2", None]):
        prompt = {"prompt_name": "capitals", "prompt_version": version} if version else {}
        writer.write(row(i, latency_ms=100.0 * (i + 1), **prompt))
    writer.flush()
    writer.close()

    listed = run("traces", "list", "--prompt", "capitals@production")
    assert "t-1" in listed and "t-2" in listed and "t-0 " not in listed and "capitals@2" in listed
    every = run("traces", "list", "--prompt", "capitals")
    assert all(f"t-{i}" in every for i in (0, 1, 2)) and "t-3" not in every
    assert "No prompt named" in run("traces", "list", "--prompt", "nope@1", code=2)

    stats = run("prompt", "stats", "capitals")
    cells = [line.replace("│", " ").split() for line in stats.splitlines()]
    lines = {c[0]: " ".join(c) for c in cells if c and c[0].isdigit()}
    assert set(lines) == {"1", "2"}
    assert lines["2"].startswith("2 (production) 2 0 250 ")  # version, requests, errors, mean latency
    assert "No traces of prompt 'other'" in run("prompt", "stats", "other")
    by_version = {r["version"]: r for r in json.loads(run("prompt", "stats", "capitals", "--json"))}
    assert set(by_version) == {1, 2} and by_version[2]["requests"] == 2 and by_version[2]["latency_ms"] == 250
    assert json.loads(run("prompt", "stats", "other", "--json")) == []
    prompts = {t["prompt_version"] for t in json.loads(run("traces", "list", "--prompt", "capitals@2", "--json"))}
    assert prompts == {2}


def test_edit_in_the_users_editor_from_a_terminal(home, tmp_path):
    """Without --file or flags, in a terminal with $EDITOR set, `prompt edit` opens the latest version as YAML in the
    editor and saves what it leaves as the next version; an editor that fails saves nothing."""
    import os
    import pty
    import subprocess
    import sys

    run("prompt", "create", "cap", "--user", "What is the capital of {{ country }}?")
    editor = tmp_path / "editor.sh"
    editor.write_text("#!/bin/sh\nsed -i 's/capital of/capital city of/' \"$1\"\n")
    editor.chmod(0o755)
    failing = tmp_path / "failing.sh"
    failing.write_text("#!/bin/sh\nexit 3\n")
    failing.chmod(0o755)

    def edit_in_terminal(editor_path) -> subprocess.CompletedProcess:
        terminal, stdin = pty.openpty()  # stdin is a terminal, as when a person runs the command
        try:
            cmd = [sys.executable, "-m", "fmstack", "prompt", "edit", "cap"]
            env = os.environ | {"EDITOR": str(editor_path), "COLUMNS": "200"}
            return subprocess.run(cmd, stdin=stdin, capture_output=True, text=True, env=env, timeout=120)
        finally:
            os.close(stdin)
            os.close(terminal)

    done = edit_in_terminal(editor)
    assert done.returncode == 0 and "created cap@2" in done.stdout, done.stdout + done.stderr
    assert "capital city of {{ country }}" in run("prompt", "show", "cap@2")
    done = edit_in_terminal(failing)
    assert done.returncode == 2 and "editor exited with 3; nothing was saved" in done.stderr, done.stderr
    assert "cap@3" not in run("prompt", "list")
