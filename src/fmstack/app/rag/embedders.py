"""How a collection's vectors are made: the embedding backend, chosen per collection and recorded with it.

- `sentence-transformers`: the registry's MiniLM (FMSTACK_EMBEDDING_MODEL) on PyTorch, or a model `fmstack rag tune`
  fine-tuned for the collection (`embedding_path`).
- `onnx-int8`: the same MiniLM exported to ONNX, fused and quantized to int8 once (engines/onnx_int8.py), run by
  onnxruntime with MiniLM's own tokenizer and mean pooling: about 2.5× the chunks/s on 2 cores, vectors within
  cosine ≥ 0.98 of the PyTorch ones (benchmarks/rag.py, tests/app/rag/test_quality.py).

Every vector of one collection comes from one `EmbedderSpec`: ingesting with another backend is refused, and
changing it is a new index version (`fmstack rag reembed`), switched atomically.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmstack.core.errors import InvalidRequest
from fmstack.engines.compute import COMPUTE
from fmstack.engines.embeddings import encode
from fmstack.engines.onnx_int8 import int8_onnx

BACKENDS = ("sentence-transformers", "onnx-int8")
DEFAULT_BACKEND = "sentence-transformers"


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


class OnnxEmbedder:
    """all-MiniLM-L6-v2 int8 on onnxruntime: tokenize (MiniLM's tokenizer.json, truncated at the model's limit),
    run, mean-pool, normalize — what sentence-transformers does, without PyTorch."""

    def __init__(self, model_dir: Path, cache: Path, max_tokens: int, threads: int):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Waiting threads sleep instead of spinning: on 2 shared cores a spinning thread burns what the other needs
        # (measured: 13 chunks per CPU-second with one thread, 9 with two spinning ones).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            str(int8_onnx(model_dir, cache)), options, providers=["CPUExecutionProvider"]
        )
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_tokens)
        self.tokenizer.no_padding()
        self.dimensions = int(self.session.get_outputs()[0].shape[-1])
        self._lock = threading.Lock()  # the tokenizer's truncation state is shared

    def embed(self, texts: list[str]) -> np.ndarray:
        """One text per run: the int8 model quantizes activations with one scale per run, so in a batch a text's
        vector would depend on its neighbours (a question embedded alone would not match its chunk embedded among
        others); unpadded single runs are also as fast as sorted batches of 32 (measured 100 vs 84 texts/s)."""
        with self._lock:
            encoded = self.tokenizer.encode_batch(texts)
        out = np.empty((len(texts), self.dimensions), np.float32)
        for row, e in enumerate(encoded):
            ids = np.asarray([e.ids], np.int64)
            feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
            pooled = self.session.run(None, feeds)[0][0].mean(axis=0)
            out[row] = pooled / max(float(np.linalg.norm(pooled)), 1e-12)
        return out


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
