"""Builds engines from registry entries and keeps each loaded model once, for the server and the CLI."""

from __future__ import annotations

import threading
from collections.abc import Callable

from fmstack.core.config import Settings
from fmstack.core.errors import InvalidRequest
from fmstack.core.registry import ModelSpec, Registry
from fmstack.core.sources import Progress
from fmstack.engines.base import Engine
from fmstack.engines.embeddings import EmbeddingEngine


def load_engine(spec: ModelSpec, settings: Settings, progress: Progress | None = None) -> Engine | EmbeddingEngine:
    """Prepare the model's files (join, verify, download) and load it on its engine."""
    if spec.engine == "openai":
        from fmstack.engines.remote import RemoteEngine

        return RemoteEngine(spec, settings.request_timeout)
    path = spec.local_path(settings, progress)
    if spec.engine == "llamacpp":
        from fmstack.engines.llamacpp import LlamaCppEngine

        return LlamaCppEngine(spec, path, settings)
    if spec.engine == "transformers":
        from fmstack.engines.transformers import TransformersEngine

        return TransformersEngine(spec, path, settings)
    return EmbeddingEngine(spec, path)


class EnginePool:
    """Lazily loaded engines by model name; loading one model never blocks requests to another."""

    def __init__(self, registry: Registry, settings: Settings, progress: Callable[[str], Progress] | None = None):
        self.registry = registry
        self.settings = settings
        self._progress = progress
        self._engines: dict[str, Engine | EmbeddingEngine] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, name: str) -> Engine | EmbeddingEngine:
        if (engine := self._engines.get(name)) is not None:
            return engine
        spec = self.registry.get(name)
        with self._guard:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            if name not in self._engines:
                progress = self._progress(name) if self._progress else None
                self._engines[name] = load_engine(spec, self.settings, progress)
        return self._engines[name]

    def chat(self, name: str) -> Engine:
        if self.registry.get(name).kind == "embedding":
            raise InvalidRequest(f"'{name}' is an embedding model; use /v1/embeddings.", param="model")
        return self.get(name)  # type: ignore[return-value]

    def embedding(self, name: str) -> EmbeddingEngine:
        if self.registry.get(name).kind != "embedding":
            raise InvalidRequest(f"'{name}' is not an embedding model; use /v1/chat/completions.", param="model")
        return self.get(name)  # type: ignore[return-value]

    @property
    def loaded(self) -> dict[str, Engine | EmbeddingEngine]:
        return dict(self._engines)

    def close(self) -> None:
        for engine in self._engines.values():
            if isinstance(engine, Engine):
                engine.close()
        self._engines.clear()
