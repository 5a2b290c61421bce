"""From a tokenizer spec to a loaded tokenizer: a path (a directory with tokenizer.json or a Hugging Face
checkpoint, a tokenizer .json file, a .gguf file), a registry model name, or a Hugging Face Hub name.

Whatever the source, the result is a fast (Rust) `tokenizers.Tokenizer` and the ids of its BOS, EOS, PAD and UNK
tokens, read from the config files when they name them and recognised by common spellings otherwise.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from fmstack.core.errors import InvalidRequest, ModelUnavailable
from fmstack.model.data.tokenize.specials import FALLBACK_KEYS, GUESSES, ROLES

HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
ACCEPTED = (
    "a directory with tokenizer.json (or a Hugging Face checkpoint), a tokenizer .json file, a .gguf file, "
    "a registry model name (see `fmstack models`), or a Hugging Face Hub name like 'org/name'"
)


@dataclass
class Loaded:
    """A tokenizer ready to use: the Rust tokenizer, the ids of its special tokens, and the size of an id array."""

    backend: Tokenizer
    ids: dict[str, int | None]  # bos, eos, pad, unk -> token id, or None if the tokenizer has no such token
    vocab_size: int  # one more than the largest id, so every id indexes an array of this size

    def __post_init__(self) -> None:
        # Some tokenizer.json files truncate and pad (all-MiniLM-L6-v2 to 128 tokens): whole documents are wanted.
        self.backend.no_truncation()
        self.backend.no_padding()


def resolve(spec: str) -> Loaded:
    """A path if one exists, else a registry name, else a Hub name; anything else is an error naming the forms."""
    path = Path(spec).expanduser()
    if path.exists():
        return _from_path(path)
    from fmstack.core.config import get_settings
    from fmstack.core.registry import Registry

    settings = get_settings()
    registry = Registry(settings)
    if spec in registry.specs:
        model = registry.get(spec)
        if model.engine == "openai":
            raise InvalidRequest(
                f"'{spec}' is a remote model: fmstack has no local tokenizer for it. Give its tokenizer as {ACCEPTED}."
            )
        return _from_path(model.local_path(settings))
    if HUB_NAME.match(spec):
        return _from_hub(spec, settings.models_dir / "hub")
    known = ", ".join(sorted(registry.specs))
    raise InvalidRequest(
        f"Tokenizer '{spec}' is not a file, directory, registry model or Hub name. Give {ACCEPTED}. "
        f"Registry models: {known}.",
        param="tokenizer",
    )


def _from_path(path: Path) -> Loaded:
    if path.is_dir() and (path / "tokenizer.json").is_file():
        return _from_json(path / "tokenizer.json", _read_configs(path))
    if path.is_dir():
        return _from_transformers(str(path))  # a checkpoint with only e.g. a SentencePiece tokenizer.model
    if path.suffix == ".gguf":
        return _from_transformers(str(path.parent), gguf_file=path.name)
    if path.suffix == ".json":
        configs = _read_configs(path.parent) if path.name == "tokenizer.json" else {}
        return _from_json(path, configs)
    raise InvalidRequest(f"{path} is not a tokenizer. Give {ACCEPTED}.", param="tokenizer")


def _read_configs(folder: Path) -> dict[str, Any]:
    """tokenizer_config.json overlaid with special_tokens_map.json, as transformers reads them."""
    merged: dict[str, Any] = {}
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if (folder / name).is_file():
            merged |= json.loads((folder / name).read_text(encoding="utf-8"))
    return merged


def _from_json(path: Path, configs: dict[str, Any]) -> Loaded:
    try:
        backend = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception for a malformed file
        raise InvalidRequest(f"{path} is not a Hugging Face tokenizers JSON file ({exc}).") from exc
    ids = {role: _role_id(backend, role, configs) for role in ROLES}
    return Loaded(backend, ids, id_bound(backend))


def _role_id(backend: Tokenizer, role: str, configs: dict[str, Any]) -> int | None:
    """The id of a role's token: from the config files if they name it, else a common spelling in the vocab."""
    for key in FALLBACK_KEYS.get(role, (f"{role}_token",)):
        token = configs.get(key)
        token = token.get("content") if isinstance(token, dict) else token
        if token and backend.token_to_id(token) is not None:
            return backend.token_to_id(token)
    found = (backend.token_to_id(t) for t in GUESSES[role])
    return next((i for i in found if i is not None), None)


def _from_transformers(location: str, **kwargs: Any) -> Loaded:
    """GGUF files, Hub names and checkpoints without tokenizer.json go through transformers, which converts them
    to a fast (Rust) tokenizer; we keep that and the ids of the special tokens."""
    from transformers import AutoTokenizer

    try:
        hf = AutoTokenizer.from_pretrained(location, **kwargs)
    except Exception as exc:  # transformers raises many kinds for a missing or unreadable tokenizer
        raise InvalidRequest(f"transformers could not load a tokenizer from {location} ({exc}).") from exc
    backend = getattr(hf, "backend_tokenizer", None)
    if backend is None:
        raise InvalidRequest(f"{location} has only a slow (Python) tokenizer; fmstack needs a fast one.")
    ids = {
        "bos": _first_id(hf, "bos_token_id", "cls_token_id"),
        "eos": _first_id(hf, "eos_token_id", "sep_token_id"),
        "pad": hf.pad_token_id,
        "unk": hf.unk_token_id,
    }
    return Loaded(backend, ids, max(id_bound(backend), len(hf)))


def _first_id(hf: Any, *attrs: str) -> int | None:
    return next((getattr(hf, a) for a in attrs if getattr(hf, a, None) is not None), None)


def _from_hub(name: str, cache_dir: Path) -> Loaded:
    """Cached Hub tokenizers load offline; otherwise probe the Hub first, so an offline machine gets an answer at
    once instead of transformers retrying for tens of seconds."""
    from huggingface_hub import constants

    from fmstack.core.sources import _reachable

    try:
        return _from_transformers(name, cache_dir=cache_dir, local_files_only=True)
    except InvalidRequest:
        pass
    if constants.HF_HUB_OFFLINE or not _reachable(constants.ENDPOINT):
        raise ModelUnavailable(
            f"Tokenizer '{name}' is not a local path or registry model, and the Hugging Face Hub cannot be reached "
            f"to download it. Connect once (it is cached afterwards), or give {ACCEPTED}."
        )
    return _from_transformers(name, cache_dir=cache_dir)


def id_bound(backend: Tokenizer) -> int:
    """One more than the largest token id (vocabularies may have holes, so this can exceed their size)."""
    vocab = backend.get_vocab(with_added_tokens=True)
    return max(vocab.values(), default=-1) + 1
