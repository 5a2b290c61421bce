"""The model layer: making and changing models — dataset pipelines (`data`), training (`train`), export to GGUF
(`export`), and GGUF → Hugging Face conversion (`convert`) so GGUF-only models can be fine-tuned.

Layer: imports `fmstack.engines` (chat message types) and `fmstack.core`; the CLI imports it. It never imports
`fmstack.app` (its sibling layer), the gateway, the server or the CLI: trained models reach the rest of fmstack
through the registry (`fmstack.core.registry`), as files. Inside it, `train` uses `data` (tokenizers, packed
blocks) and `convert`; `export` stands alone.
"""
