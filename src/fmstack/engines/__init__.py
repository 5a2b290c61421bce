"""Models behind one small interface: `base.Engine` (prepare a request, then stream its events).

Implemented by `llamacpp` (GGUF on llama.cpp; `llamacpp_batch` continuous batching, `sampling`, `prefix_cache`,
`speculative`), `transformers` (Hugging Face checkpoints on PyTorch) and `remote` (an OpenAI-compatible endpoint);
`embeddings` for sentence embeddings. Around them: `jobs` (the bounded queue between callers and a local
model), `compute` (sharing the CPU between local engines), `decoding` (token bytes to text events, stop strings),
`messages` (the chat message types every caller speaks) and `pool` (builds engines from the registry, each model
loaded once). Layer: imports `fmstack.core` only; the gateway, `app` and `model` import it.
"""
