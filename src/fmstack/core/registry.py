"""The model registry: a name maps to an engine, a source, a context length and prices.

Built-in entries ship in `models.toml` beside this file; a user file `$FMSTACK_HOME/models.toml` adds or replaces
entries. Resolving a source to files happens only when a model is loaded, so listing models stays instant.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

from fmstack.core import sources
from fmstack.core.config import Settings
from fmstack.core.errors import InvalidRequest, ModelNotFound

BUILTIN = Path(__file__).with_name("models.toml")
ENGINES = {"llamacpp", "transformers", "openai", "sentence-transformers"}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    engine: str
    source: str | tuple[str, ...] = ""
    sha256: str | None = None
    context_length: int = 4096
    price_input: float = 0.0
    price_output: float = 0.0
    description: str = ""
    base_url: str | None = None
    api_key_env: str | None = None
    remote_model: str | None = None

    @property
    def kind(self) -> str:
        return "embedding" if self.engine == "sentence-transformers" else "chat"

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.price_input + completion_tokens * self.price_output) / 1e6

    def source_label(self) -> str:
        if self.engine == "openai":
            return f"remote {self.base_url}"
        if isinstance(self.source, tuple):
            return f"{len(self.source)} package chunks"
        return self.source

    def local_path(self, settings: Settings, progress: sources.Progress | None = None) -> Path:
        """Resolve the source to a file or directory on disk, preparing (joining, downloading) it if needed."""
        src = self.source
        if isinstance(src, tuple):
            target = settings.models_dir / f"{self.name}.gguf"
            return sources.join_chunks(list(src), target, self.sha256 or "", progress)
        if src.startswith("package:"):
            return sources.verified(sources.package_file(src), self.sha256, progress)
        if src.startswith("hf:"):
            repo, _, filename = src.removeprefix("hf:").partition("::")
            return sources.hub_download(repo, filename or None, settings.models_dir / "hub")
        path = Path(src.removeprefix("path:")).expanduser()
        if not path.exists():
            raise sources.ModelUnavailable(f"Model '{self.name}': local path {path} does not exist.")
        return sources.verified(path, self.sha256, progress) if path.is_file() else path

    def size_bytes(self) -> int | None:
        """Size on disk if the files are already there, without preparing anything."""
        try:
            if isinstance(self.source, tuple):
                return sum(sources.package_file(s).stat().st_size for s in self.source)
            if self.source.startswith("package:"):
                path = sources.package_file(self.source)
            elif self.source.startswith("hf:") or self.engine == "openai":
                return None
            else:
                path = Path(self.source.removeprefix("path:")).expanduser()
            if path.is_dir():
                return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
            return path.stat().st_size
        except (sources.ModelUnavailable, OSError):
            return None

    def available(self) -> bool:
        if self.engine == "openai":
            return bool(self.base_url)
        if isinstance(self.source, str) and self.source.startswith("hf:"):
            return True  # downloaded on first use
        return self.size_bytes() is not None


@dataclass(frozen=True)
class ModelInfo:
    """A model as `fmstack models` lists it: the spec's facts and what is on disk now."""

    name: str
    engine: str
    kind: str
    source: str
    context_length: int
    available: bool
    size_bytes: int | None
    description: str

    @classmethod
    def of(cls, spec: ModelSpec) -> ModelInfo:
        facts = (spec.name, spec.engine, spec.kind, spec.source_label(), spec.context_length)
        return cls(*facts, spec.available(), spec.size_bytes(), spec.description)


def _parse(path: Path) -> dict[str, ModelSpec]:
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise InvalidRequest(f"{path}: {exc}. Fix the TOML syntax.") from exc
    specs = {}
    for name, entry in data.get("models", {}).items():
        entry = dict(entry)
        engine = entry.pop("engine", None)
        if engine not in ENGINES:
            raise InvalidRequest(
                f"{path}: model '{name}' field 'engine' is {engine!r}; use one of {', '.join(sorted(ENGINES))}."
            )
        source = entry.pop("source", "")
        if isinstance(source, list):
            source = tuple(source)
        known = set(ModelSpec.__dataclass_fields__) - {"name", "engine", "source"}
        if unknown := sorted(set(entry) - known):
            raise InvalidRequest(
                f"{path}: model '{name}' has unknown field '{unknown[0]}'; the fields are "
                f"engine, source, {', '.join(sorted(known))}."
            )
        if engine != "openai" and not source:
            raise InvalidRequest(f"{path}: model '{name}' needs a 'source'.")
        specs[name] = ModelSpec(name=name, engine=engine, source=source, **entry)
    return specs


class Registry:
    """All models fmstack knows, built-in and the user's."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.specs = _parse(BUILTIN)
        if settings.user_registry.exists():
            self.specs.update(_parse(settings.user_registry))

    def get(self, name: str) -> ModelSpec:
        try:
            return self.specs[name]
        except KeyError:
            raise ModelNotFound(name, list(self.specs)) from None

    def __iter__(self):
        return iter(self.specs.values())

    def describe(self) -> list[ModelInfo]:
        """Every model with its availability and size on disk, preparing nothing (so listing stays instant)."""
        return [ModelInfo.of(spec) for spec in self]


def register_user_model(settings: Settings, name: str, **fields) -> None:
    """Add (or replace) an entry in the user's registry file, atomically."""
    path = settings.user_registry
    data = tomllib.loads(path.read_text()) if path.exists() else {}
    data.setdefault("models", {})[name] = fields
    settings.home.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(_dump_toml(data))
    tmp.replace(path)


def _dump_toml(data: dict) -> str:
    """Enough TOML for registry files: tables of models with string, number, bool and list values."""
    lines = []
    for name, fields in data.get("models", {}).items():
        lines.append(f"[models.{json.dumps(name)}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in fields.items()]
        lines.append("")
    return "\n".join(lines)
