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
