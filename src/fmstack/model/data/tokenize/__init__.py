"""Tokenizers for datasets: train a byte-level BPE, load any tokenizer fmstack can name, measure how a tokenizer
cuts a corpus, and pack token streams into fixed-length training blocks.

Everything streams: texts are read once per pass, encoded in batches (Rust does the work, in parallel), and
written incrementally, so memory stays bounded however large the corpus is. Statistics of shards add up to the
statistics of the whole, like `StepStats`.

One concept per module: `specials` (the BOS/EOS/PAD/UNK roles), `bpe` (training and saving), `resolve` (from a
path, registry name or Hub name to a loaded tokenizer), `tokenizer` (`TextTokenizer`, streaming encoding),
`stats` (`TokenStats`) and `pack` (blocks on disk).

```python
from fmstack.model.data.tokenize import load_tokenizer, save_tokenizer, token_stats, train_bpe

save_tokenizer(train_bpe(texts, vocab_size=8000), "out/tokenizer")
tok = load_tokenizer("out/tokenizer")        # or a registry model, a .gguf file, a Hub name
print(token_stats(tok, texts).to_dict()["tokens_per_word"])
```
"""

from fmstack.model.data.tokenize.bpe import save_tokenizer, train_bpe
from fmstack.model.data.tokenize.pack import load_blocks, pack_blocks
from fmstack.model.data.tokenize.specials import DEFAULT_SPECIAL_TOKENS, ROLES
from fmstack.model.data.tokenize.stats import TokenStats, token_stats
from fmstack.model.data.tokenize.tokenizer import TextTokenizer, encode_stream, load_tokenizer

__all__ = [
    "DEFAULT_SPECIAL_TOKENS",
    "ROLES",
    "TextTokenizer",
    "TokenStats",
    "encode_stream",
    "load_blocks",
    "load_tokenizer",
    "pack_blocks",
    "save_tokenizer",
    "token_stats",
    "train_bpe",
]
