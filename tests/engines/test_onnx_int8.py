"""The int8 ONNX embedding model: built once from the packaged MiniLM, close to PyTorch's vectors, refused for
models its fusions do not fit."""

import json
import shutil

import numpy as np
import pytest

from fmstack.app.rag.embedders import OnnxEmbedder
from fmstack.core.config import get_settings
from fmstack.core.errors import InvalidRequest
from fmstack.core.registry import Registry
from fmstack.engines.onnx_int8 import int8_onnx

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def minilm():
    settings = get_settings()
    return Registry(settings).get("all-minilm-l6-v2").local_path(settings)


def test_vectors_match_sentence_transformers_whatever_their_neighbours_and_the_file_is_reused(minilm, tmp_path):
    from sentence_transformers import SentenceTransformer

    texts = ["Short.", "A kettle boils water. " * 60, "Basalt columns form when lava cools slowly and cracks."]
    embedder = OnnxEmbedder(minilm, tmp_path, max_tokens=256, threads=2)
    onnx = embedder.embed(texts)
    torch = SentenceTransformer(str(minilm), device="cpu").encode(texts, normalize_embeddings=True)
    assert onnx.shape == (3, 384) and (np.sum(onnx * torch, axis=1) > 0.98).all()  # int8 activations: ~0.99
    assert np.allclose(embedder.embed(texts[:1]), onnx[:1], atol=1e-6)  # alone or among others: one vector

    (built,) = tmp_path.iterdir()
    stamp = built.stat().st_mtime_ns
    assert int8_onnx(minilm, tmp_path) == built and built.stat().st_mtime_ns == stamp


def test_a_model_the_fusions_do_not_fit_is_refused_before_any_work(minilm, tmp_path):
    other = tmp_path / "model"
    shutil.copytree(minilm, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps(config | {"model_type": "roberta"}))
    with pytest.raises(InvalidRequest, match="BERT-family"):
        int8_onnx(other, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()
