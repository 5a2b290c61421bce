"""Sentence embeddings (the packaged all-MiniLM-L6-v2) on sentence-transformers."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from fmstack.core.errors import InvalidRequest
from fmstack.core.registry import ModelSpec
from fmstack.engines.compute import COMPUTE


class EmbeddingEngine:
    def __init__(self, spec: ModelSpec, path: Path):
        from sentence_transformers import SentenceTransformer

        self.spec = spec
        self.model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        self._lock = threading.Lock()  # one batch at a time: the model is not re-entrant

    @property
    def dimensions(self) -> int:
        return self.model.get_sentence_embedding_dimension()

    def embed(self, texts: list[str], truncate: bool = False) -> tuple[np.ndarray, int]:
        """Unit-length vectors for `texts`, and the number of tokens they used. Refuses texts the model would
        truncate, unless the caller (a metric comparing long answers, say) accepts `truncate`."""
        with self._lock:  # the fast tokenizer is shared with encode(): one thread at a time
            lengths = [len(ids) for ids in self.model.tokenizer(texts)["input_ids"]]
            limit = self.model.max_seq_length
            for i, n in enumerate(lengths):
                if n > limit and not truncate:
                    raise InvalidRequest(
                        f"input[{i}] has {n} tokens; model '{self.spec.name}' takes at most {limit}. "
                        "Split it into shorter chunks.",
                        param="input",
                    )
            vectors = COMPUTE.call(encode, self.model, texts)
        return vectors.astype(np.float32), sum(lengths)


def encode(model, texts: list[str]) -> np.ndarray:
    """Unit vectors from a sentence-transformers model. Run on the compute thread: torch shares llama.cpp's OpenMP
    runtime (both load libgomp.so.1), so a torch team of its own would slow every llama.cpp model (compute.py)."""
    return model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
