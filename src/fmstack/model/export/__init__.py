"""Export: Hugging Face checkpoints to GGUF files (f32, f16, q8_0, q4_k_m) that llama.cpp serves.

`gguf` writes the tensors and metadata; `tokenizer` carries the tokenizer over, refusing one llama.cpp would
tokenize differently. Layer: imports `fmstack.core` only.
"""
