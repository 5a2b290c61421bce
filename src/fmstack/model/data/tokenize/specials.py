"""Special tokens: the four roles (BOS, EOS, PAD, UNK), the tokens fmstack's own tokenizers give them, and the
spellings by which another tokenizer's are recognised when its files do not name them."""

DEFAULT_SPECIAL_TOKENS = ("<|bos|>", "<|eos|>", "<|pad|>", "<|unk|>")
ROLES = ("bos", "eos", "pad", "unk")  # the meaning of the first four special tokens, in order
# When a tokenizer.json comes without config files, its roles are guessed from these common spellings.
GUESSES = {
    "bos": ("<|bos|>", "<s>", "<|begin_of_text|>", "<|startoftext|>", "[CLS]"),
    "eos": ("<|eos|>", "</s>", "<|end_of_text|>", "<|endoftext|>", "[SEP]"),
    "pad": ("<|pad|>", "<pad>", "[PAD]"),
    "unk": ("<|unk|>", "<unk>", "[UNK]"),
}
# Encoder-only tokenizers (BERT) have no BOS/EOS; [CLS] and [SEP] play those parts.
FALLBACK_KEYS = {"bos": ("bos_token", "cls_token"), "eos": ("eos_token", "sep_token")}
