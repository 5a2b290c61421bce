"""resolve_checkpoint: registry models and folders as Hugging Face checkpoints; GGUF conversions checked against
llama.cpp once, with the numbers kept beside the cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from fmstack.core.config import Settings
from fmstack.core.errors import FmstackError, InvalidRequest, ModelUnavailable
from fmstack.core.registry import Registry
from fmstack.model.train import base_model
from fmstack.model.train.base_model import resolve_checkpoint, verification_path
from tests.conftest import TEST_MODEL

pytestmark = pytest.mark.slow

REMOTE = """
[models."remote-gpt"]
engine = "openai"
base_url = "https://api.example.com/v1"
api_key_env = "EXAMPLE_KEY"
"""


def shared_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Path]:
    """SmolLM2 as a verified HF checkpoint, converted once per test session: every module that asks gets the
    same data dir, and resolve_checkpoint's own disk cache does the sharing."""
    settings = Settings(home=tmp_path_factory.getbasetemp() / "train-home", threads=2)
    return settings, resolve_checkpoint(TEST_MODEL, settings)


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[Settings, Path]:
    return shared_checkpoint(tmp_path_factory)


def test_gguf_model_is_converted_and_its_logits_match_llama_cpp(converted):
    settings, path = converted
    assert path == settings.models_dir / "hf" / TEST_MODEL
    assert (path / "config.json").exists() and list(path.glob("*.safetensors"))
    assert "<|im_start|>" in AutoTokenizer.from_pretrained(path).chat_template
    report = json.loads(verification_path(path).read_text())
    assert report["passed"], report["reason"]
    assert report["prompts"] == 3 and report["positions"] >= 9
    assert all(check["same_tokens"] for check in report["checks"])
    assert report["top1_agreement"] >= base_model.MIN_TOP1_AGREEMENT
    assert report["min_cosine"] >= base_model.MIN_COSINE and report["top1_in_their_top5"]


def test_a_cached_conversion_is_neither_converted_nor_verified_again(converted, monkeypatch):
    settings, path = converted

    def boom(*_, **__):
        raise AssertionError("must not run again")

    monkeypatch.setattr(base_model, "verify_against_gguf", boom)
    monkeypatch.setattr("fmstack.model.convert.gguf_to_hf", boom)
    assert resolve_checkpoint(TEST_MODEL, settings) == path


def test_the_check_rejects_a_checkpoint_with_a_conversion_bug(converted):
    """Two decoder layers in the wrong order (a plausible tensor-mapping bug) must fail the check."""
    settings, path = converted
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    layers = model.model.layers
    layers[0], layers[1] = layers[1], layers[0]
    gguf = Registry(settings).get(TEST_MODEL).local_path(settings)
    report = base_model.compare_with_llamacpp(AutoTokenizer.from_pretrained(path), model, gguf, 2)
    assert not report["passed"]
    assert report["min_cosine"] < base_model.MIN_COSINE


def test_a_failed_check_is_a_clear_error_and_leaves_no_checkpoint(converted, tmp_path, monkeypatch):
    _, cached = converted
    settings = Settings(home=tmp_path, threads=2)
    out = settings.models_dir / "hf" / TEST_MODEL
    shutil.copytree(cached, out)  # converted but never verified
    monkeypatch.setattr(base_model, "verify_against_gguf", lambda *_: base_model._judge([]))
    with pytest.raises(ModelUnavailable, match="disagree with llama.cpp.*cosine"):
        resolve_checkpoint(TEST_MODEL, settings)
    assert not out.exists()
    assert json.loads(verification_path(out).read_text())["passed"] is False


def test_a_local_checkpoint_folder_is_used_as_is(converted, tmp_path):
    _, path = converted
    assert resolve_checkpoint(str(path), Settings(home=tmp_path)) == path
    with pytest.raises(InvalidRequest, match="no config.json"):
        resolve_checkpoint(str(tmp_path), Settings(home=tmp_path))


def test_remote_and_unknown_models_cannot_be_fine_tuned(tmp_path):
    (tmp_path / "models.toml").write_text(REMOTE)
    settings = Settings(home=tmp_path)
    with pytest.raises(InvalidRequest, match="remote model.*cannot be fine-tuned"):
        resolve_checkpoint("remote-gpt", settings)
    with pytest.raises(FmstackError, match="does not exist"):
        resolve_checkpoint("no-such-model", settings)
