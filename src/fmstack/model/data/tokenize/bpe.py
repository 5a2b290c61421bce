"""Training a BPE tokenizer on a stream of texts, and saving it as the files Hugging Face's loaders read."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from fmstack.core.errors import InvalidRequest
from fmstack.model.data.tokenize._files import write_atomic
from fmstack.model.data.tokenize.specials import DEFAULT_SPECIAL_TOKENS, ROLES


def train_bpe(
    texts: Iterable[str],
    vocab_size: int,
    min_frequency: int = 2,
    special_tokens: tuple[str, ...] = DEFAULT_SPECIAL_TOKENS,
    byte_level: bool = True,
) -> Tokenizer:
    """Train a BPE tokenizer on a stream of texts.

    Byte-level (GPT-2 style, the default): every byte is in the base alphabet, so any text encodes without an
    unknown token and decode(encode(x)) == x exactly. Otherwise a SentencePiece-like BPE on characters, with "▁"
    marking spaces and unseen characters becoming the unk token. The first four `special_tokens` are the BOS, EOS,
    PAD and UNK tokens (ids 0-3); pass the same tuple to `save_tokenizer`.

    Training is deterministic: the same texts give the same tokenizer JSON, whatever the number of threads
    (RAYON_NUM_THREADS) or the hash seed, because the trainer breaks ties between merges by token id.
    """
    if len(special_tokens) < len(ROLES):
        raise InvalidRequest(f"special_tokens needs at least {len(ROLES)} tokens: BOS, EOS, PAD and UNK, in order.")
    alphabet = pre_tokenizers.ByteLevel.alphabet() if byte_level else []
    if vocab_size <= len(alphabet) + len(special_tokens):
        raise InvalidRequest(
            f"vocab_size {vocab_size} leaves no room for merges: the byte alphabet and special tokens alone take "
            f"{len(alphabet) + len(special_tokens)}. Use a larger vocab_size (thousands)."
        )
    if byte_level:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
    else:
        tok = Tokenizer(models.BPE(unk_token=special_tokens[3]))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
        tok.decoder = decoders.Metaspace(prepend_scheme="first")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(special_tokens),
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return tok


def save_tokenizer(
    tok: Tokenizer, out_dir: Path | str, special_tokens: tuple[str, ...] = DEFAULT_SPECIAL_TOKENS
) -> Path:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json, each atomically: the files
    `PreTrainedTokenizerFast.from_pretrained(out_dir)` and `AutoTokenizer.from_pretrained(out_dir)` read. Written by
    hand rather than by transformers' save_pretrained, which (5.x) no longer writes special_tokens_map.json and names
    a class 4.x does not know. The first four `special_tokens` are the BOS, EOS, PAD and UNK tokens."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    missing = [t for t in special_tokens if tok.token_to_id(t) is None]
    if missing:
        raise InvalidRequest(f"special tokens {missing} are not in the tokenizer's vocabulary.")
    roles = {f"{role}_token": token for role, token in zip(ROLES, special_tokens, strict=False)}
    extra = list(special_tokens[len(ROLES) :])
    specials = roles | ({"additional_special_tokens": extra} if extra else {})
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": False,  # else decode would change " ." to "." and break round trips
        "model_max_length": 1_000_000_000,
        **specials,
    }
    write_atomic(out / "tokenizer.json", tok.to_str(pretty=True))
    write_atomic(out / "tokenizer_config.json", json.dumps(config, indent=2))
    write_atomic(out / "special_tokens_map.json", json.dumps(specials, indent=2))
    return out
