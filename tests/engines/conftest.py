"""SmolLM2 as a Hugging Face checkpoint, converted once per session from its packaged GGUF for the transformers
engine's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

HF_MODEL = "smollm2-hf"


@pytest.fixture(scope="session")
def hf_home(tmp_path_factory) -> Iterator[Path]:
    """An FMSTACK_HOME holding `smollm2-hf` (engine transformers), converted by `fmstack models convert`; it is the
    FMSTACK_HOME while the fixture lives."""
    from fmstack.cli import app

    home = tmp_path_factory.mktemp("hf")
    mp = pytest.MonkeyPatch()
    mp.setenv("FMSTACK_HOME", str(home))
    result = CliRunner().invoke(app, ["models", "convert", "smollm2-135m-instruct", "--name", HF_MODEL])
    assert result.exit_code == 0, result.output
    yield home
    mp.undo()
