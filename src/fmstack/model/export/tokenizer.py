"""The tokenizer half of a GGUF file: what llama.cpp needs to cut text into exactly the ids the Hugging Face
tokenizer gives, so an exported model sees the same tokens it was trained on.

llama.cpp does not run tokenizer.json; it re-implements byte-level BPE and picks the splitting regex from the name
in `tokenizer.ggml.pre`. llama.cpp's own converter finds that name by hashing the ids of a test string against a
table of known tokenizers; we read the pre-tokenizer's structure from tokenizer.json instead, which also covers
tokenizers trained by fmstack (no table knows their hash). Only structures whose llama.cpp regex is the same as
Hugging Face's are accepted; anything else is refused rather than exported to tokenize differently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
from transformers import AutoTokenizer

from fmstack.core.errors import InvalidRequest

# Pre-tokenizer structure (the steps of tokenizer.json's pre_tokenizer) -> llama.cpp's name for the same regexes:
# "gpt-2" is GPT-2's regex alone; "smollm" first isolates every digit, then applies GPT-2's regex.
PRE_TOKENIZERS = {("bytelevel",): "gpt-2", ("digits", "bytelevel"): "smollm"}


@dataclass(frozen=True)
class GGUFVocab:
    """Tokens, their types, merges, special ids and the chat template, ready to write."""

    pre: str
    tokens: list[str]
    types: list[int]
    special: gguf.SpecialVocab

    def add_to(self, writer: gguf.GGUFWriter) -> None:
        writer.add_tokenizer_model("gpt2")  # llama.cpp's name for byte-level BPE
        writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        writer.add_token_types(self.types)
        self.special.add_to_gguf(writer, quiet=True)


def read_vocab(checkpoint: Path, vocab_size: int) -> GGUFVocab:
    """The checkpoint's tokenizer as GGUF metadata, padded to the model's `vocab_size` (embedding rows beyond the
    tokenizer, which some checkpoints round up for speed, become unused tokens)."""
    spec = _tokenizer_json(checkpoint)
    pre = _pre_tokenizer_name(checkpoint, spec)
    hf = AutoTokenizer.from_pretrained(checkpoint)
    by_id = {i: token for token, i in hf.get_vocab().items()}
    if max(by_id) >= vocab_size:
        raise InvalidRequest(
            f"{checkpoint / 'tokenizer.json'}: the tokenizer has token id {max(by_id)} but config.json's "
            f"vocab_size is {vocab_size}; the model has no embedding for it. Save the tokenizer the model was "
            "trained with."
        )
    added = hf.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    special = gguf.SpecialVocab(checkpoint, load_merges=True, n_vocab=vocab_size)
    # transformers knows every place a chat template can be saved (tokenizer_config.json, chat_template.jinja).
    special.chat_template = hf.chat_template
    return GGUFVocab(pre, tokens, types, special)


def _tokenizer_json(checkpoint: Path) -> dict[str, Any]:
    path = checkpoint / "tokenizer.json"
    if not path.is_file():
        raise InvalidRequest(
            f"{checkpoint}: no tokenizer.json. Save the tokenizer beside the model "
            "(tokenizer.save_pretrained(folder)); GGUF export needs a fast (tokenizers) byte-level BPE tokenizer."
        )
    try:
        spec = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"{path}: not valid JSON ({exc}). Save the tokenizer again.") from exc
    model = (spec.get("model") or {}).get("type")
    if model != "BPE":
        raise InvalidRequest(
            f"{path}: field 'model.type' is {model!r}; GGUF export supports byte-level BPE tokenizers (GPT-2 "
            "style, as `fmstack data tokenize` trains and SmolLM2 uses)."
        )
    if spec.get("normalizer"):
        raise InvalidRequest(
            f"{path}: field 'normalizer' is set ({spec['normalizer'].get('type')}); llama.cpp's byte-level BPE "
            "does not normalize text, so the exported model would tokenize differently. Use a tokenizer without "
            "a normalizer."
        )
    return spec


def _pre_tokenizer_name(checkpoint: Path, spec: dict[str, Any]) -> str:
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    shape = tuple(_step_kind(step) for step in steps)
    if shape in PRE_TOKENIZERS:
        return PRE_TOKENIZERS[shape]
    described = " + ".join(step.get("type", "?") for step in steps) or "none"
    raise InvalidRequest(
        f"{checkpoint / 'tokenizer.json'}: field 'pre_tokenizer' is {described}; llama.cpp reproduces only "
        "ByteLevel (GPT-2 regex, no prefix space), optionally after Digits(individual_digits). Retrain the "
        "tokenizer with `fmstack data tokenize` (byte-level BPE)."
    )


def _step_kind(step: dict[str, Any]) -> str:
    """Name a pre-tokenizer step by what it does, so equivalent spellings (Digits or a \\p{N} Split) match."""
    kind = step.get("type")
    if kind == "ByteLevel" and step.get("use_regex", True) and not step.get("add_prefix_space", False):
        return "bytelevel"
    if kind == "Digits" and step.get("individual_digits"):
        return "digits"
    if kind == "Split" and step.get("pattern", {}).get("Regex") == "\\p{N}" and step.get("behavior") == "Isolated":
        return "digits"
    return f"unsupported {kind}"
