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
    (code,) = blocks("python")
    result = subprocess.run([sys.executable, "-c", adapt(code, server)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "384" and "{" in lines[0] and "completion_tokens" in result.stdout


def test_curl_example(server):
    curl = next(b for b in blocks("bash") if b.startswith("curl"))
    result = subprocess.run(["bash", "-c", adapt(curl, server)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert '"object":"chat.completion"' in result.stdout and "fmstack_requests_total{" in result.stdout


def test_data_example_runs_and_gives_the_numbers_the_readme_quotes(tmp_path):
    """The 'Prepare data' commands, run in a copy of examples/data; the counts the README states must hold."""
    import json
    import shutil

    block = next(b for b in blocks("bash") if "make_corpus.py" in b)
    shutil.copytree(
        Path(__file__).parents[1] / "examples" / "data",
        tmp_path / "examples" / "data",
        ignore=shutil.ignore_patterns("raw", "out", "raw-truth.json"),
    )
    script = block.replace("python ", f"{sys.executable} ").replace("fmstack ", f"{sys.executable} -m fmstack ")
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 1, result.stderr  # the two planted broken lines are rejected: exit code 1
    m = json.loads((tmp_path / "examples" / "data" / "out" / "manifest.json").read_text())
    section = README[README.index("## Prepare data") : README.index("## Configuration")]
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
