"""The README's examples run as written (against a test server, with the test model)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TEST_MODEL

pytestmark = pytest.mark.slow
README = (Path(__file__).parents[1] / "README.md").read_text()


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, re.S)


def adapt(code: str, server) -> str:
    return code.replace("http://127.0.0.1:8000", server.base).replace("qwen2.5-0.5b-instruct", TEST_MODEL)


def test_readme_starts_with_what_fmstack_is_then_the_two_commands():
    assert README.index("local-first AI engineering stack") < README.index("make up") < README.index("make test")
    first, second = blocks("bash")[0].splitlines()[:2]
    assert first.startswith("make up ") and second.startswith("make test ")


def test_python_example(server):
    code = blocks("python")[0]
    result = subprocess.run([sys.executable, "-c", adapt(code, server)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "384" and "{" in lines[0] and "completion_tokens" in result.stdout


def test_tool_calling_example_gives_a_call_that_matches_the_schema(server):
    """The tool-calling snippet, run with the quick start's client."""
    setup = blocks("python")[0].split("reply = ")[0]
    code = setup + blocks("python")[1] + "import json\nprint(call.function.name, json.loads(call.function.arguments))"
    result = subprocess.run([sys.executable, "-c", adapt(code, server)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    name, arguments = result.stdout.strip().split(" ", 1)
    assert name == "get_weather" and "'city': " in arguments


def test_curl_example(server):
    curl = next(b for b in blocks("bash") if b.startswith("curl"))
    result = subprocess.run(["bash", "-c", adapt(curl, server)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert '"object":"chat.completion"' in result.stdout and "fmstack_requests_total{" in result.stdout


def test_data_example_runs_and_gives_the_numbers_the_readme_quotes(tmp_path):
    """The 'Prepare data' commands, run in a copy of examples/data; the counts the README states must hold."""
    import json
    import shutil

    block = next(b for b in blocks("bash") if "examples/data/make_corpus.py" in b)
    shutil.copytree(
        Path(__file__).parents[1] / "examples" / "data",
        tmp_path / "examples" / "data",
        ignore=shutil.ignore_patterns("raw", "out", "raw-truth.json"),
    )
    script = block.replace("python ", f"{sys.executable} ").replace("fmstack ", f"{sys.executable} -m fmstack ")
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 1, result.stderr  # the two planted broken lines are rejected: exit code 1
    m = json.loads((tmp_path / "examples" / "data" / "out" / "manifest.json").read_text())
    section = README[README.index("## Prepare data") : README.index("## Train")]
    quoted = {
        "reads": m["counts"]["read"],
        "rejects the": m["counts"]["rejected"],
        "drops": m["counts"]["read"] - m["counts"]["after_clean"],
        "removes": m["dedup"]["exact_removed"],
        "exact and": m["dedup"]["near_removed"],
        "packs": m["tokenize"]["pack"]["tokens"],
        "into": m["tokenize"]["pack"]["n_blocks"],
    }
    for words, value in quoted.items():
        assert re.search(rf"{words}\s+{value:,}\s", section), f"README: '{words} {value:,}' (the run gave {value})"


def test_pretrain_example_runs_with_the_tiny_preset(tmp_path):
    """The 'Pretrain' commands as written, in a copy of examples/train/pretrain, with `--config tiny` for the
    reference run's 15 minutes and without the final `fmstack up` (a server); the result is a registered HF
    checkpoint whose summary has the validation perplexity the README's table reports."""
    import json
    import os
    import shutil

    block = next(b for b in blocks("bash") if "examples/train/pretrain/make_corpus.py" in b)
    assert "--config small" in block
    shutil.copytree(
        Path(__file__).parents[1] / "examples" / "train" / "pretrain",
        tmp_path / "examples" / "train" / "pretrain",
        ignore=shutil.ignore_patterns("raw", "out", "*.png"),
    )
    lines = [line for line in block.splitlines() if not line.startswith("fmstack up")]
    script = "set -e\n" + "\n".join(lines).replace("--config small", "--config tiny")
    script = script.replace("python ", f"{sys.executable} ").replace("fmstack ", f"{sys.executable} -m fmstack ")
    env = os.environ | {"FMSTACK_HOME": str(tmp_path / "home"), "FMSTACK_THREADS": "1"}
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    summary = json.loads((tmp_path / "runs" / "small" / "summary.json").read_text())
    assert summary["steps"] == 50 and summary["val_perplexity"] > 1
    assert (tmp_path / "runs" / "small" / "config.json").exists()
    assert "wiki-small" in (tmp_path / "home" / "models.toml").read_text()
