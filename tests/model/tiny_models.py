"""Tiny Llama checkpoints trained in seconds, for tests that need real models of known shape: a byte-level BPE
trained on gensim's Lee news, a chat template, and a few optimizer steps so the logits are not uniform."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from gensim.test.utils import datapath
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from fmstack.model.data.tokenize import save_tokenizer, train_bpe

TEXTS = Path(datapath("lee_background.cor")).read_text().splitlines()
# Renders every prefix of a conversation as a prefix of the whole, as fine-tuning needs.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|bos|>{{ m['role'] }}\n{{ m['content'] }}<|eos|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|bos|>assistant\n{% endif %}"
)


def tokenizer(out: Path, vocab_size: int = 600) -> Path:
    """A BPE with BOS/EOS/PAD/UNK and the chat template, saved where AutoTokenizer and the exporter read it."""
    save_tokenizer(train_bpe(TEXTS, vocab_size=vocab_size), out)
    config = json.loads((out / "tokenizer_config.json").read_text())
    (out / "tokenizer_config.json").write_text(json.dumps(config | {"chat_template": CHAT_TEMPLATE}))
    return out


def llama(out: Path, tokens: Path, *, hidden: int = 64, layers: int = 2, seed: int = 0, steps: int = 20) -> Path:
    """A Llama with the tokenizer in `tokens`, trained `steps` steps on the news text; saved with it in `out`."""
    tok = AutoTokenizer.from_pretrained(tokens)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok) + 40,  # padded past the tokenizer, as real checkpoints often are
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    ids = torch.tensor(tok.encode(" ".join(TEXTS[:40])))
    blocks = ids[: len(ids) // 32 * 32].view(-1, 32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # OpenMP threads spin while they wait: on a busy 2-core machine one is much faster
    try:
        for step in range(steps):
            batch = blocks[(step * 4) % len(blocks) :][:4]
            model(batch, labels=batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    finally:
        torch.set_num_threads(threads)
    model.save_pretrained(out)
    for file in tokens.iterdir():  # the tokenizer's own files (transformers 5 would rename its class on saving)
        shutil.copy(file, out / file.name)
    return out
