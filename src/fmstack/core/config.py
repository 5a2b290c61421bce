"""Settings read from the environment, so the server, CLI and tests agree on one data directory and store."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


@dataclass(frozen=True)
class Settings:
    """Everything configurable about a running fmstack, with the environment variable that sets it."""

    home: Path = field(
        default_factory=lambda: Path(os.environ.get("FMSTACK_HOME") or platformdirs.user_data_dir("fmstack"))
    )
    database_url: str | None = field(default_factory=lambda: os.environ.get("FMSTACK_DATABASE_URL"))
    default_model: str = field(default_factory=lambda: os.environ.get("FMSTACK_DEFAULT_MODEL", "qwen2.5-0.5b-instruct"))
    embedding_model: str = field(default_factory=lambda: os.environ.get("FMSTACK_EMBEDDING_MODEL", "all-minilm-l6-v2"))
    queue_size: int = field(default_factory=lambda: _env_int("FMSTACK_QUEUE_SIZE", 16))
    request_timeout: float = field(default_factory=lambda: _env_float("FMSTACK_REQUEST_TIMEOUT", 300.0))
    drain_timeout: float = field(default_factory=lambda: _env_float("FMSTACK_DRAIN_TIMEOUT", 30.0))
    max_body_bytes: int = field(default_factory=lambda: _env_int("FMSTACK_MAX_BODY_BYTES", 4 * 1024 * 1024))
    threads: int = field(default_factory=lambda: _env_int("FMSTACK_THREADS", os.cpu_count() or 2))
    # llama.cpp models: sequences decoded together, the KV cells they share, and prompt-lookup speculation for
    # requests that do not ask (off: on CPU a verified draft row costs nearly a decode step; measured in the engine)
    parallel: int = field(default_factory=lambda: _env_int("FMSTACK_PARALLEL", 8))
    kv_tokens: int = field(default_factory=lambda: _env_int("FMSTACK_KV_TOKENS", 16384))
    speculative: bool = field(default_factory=lambda: os.environ.get("FMSTACK_SPECULATIVE", "0") == "1")
    # host memory per llama.cpp model for the KV cells of finished requests, reused by later prompts that start
    # the same way (engines/prefix_cache.py)
    prefix_cache_mb: int = field(default_factory=lambda: _env_int("FMSTACK_PREFIX_CACHE_MB", 1024))

    @property
    def db_url(self) -> str:
        """The SQLAlchemy URL: PostgreSQL when asked for, else SQLite in the data dir."""
        if self.database_url:
            url = self.database_url
            if url.startswith("postgresql://") or url.startswith("postgres://"):
                url = "postgresql+psycopg://" + url.split("://", 1)[1]
            return url
        return f"sqlite:///{self.home / 'fmstack.db'}"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def user_registry(self) -> Path:
        return self.home / "models.toml"


def get_settings() -> Settings:
    """Fresh settings each call: tests and the CLI change the environment between calls."""
    return Settings()
