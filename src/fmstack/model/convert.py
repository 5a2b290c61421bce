"""GGUF -> Hugging Face checkpoint, so GGUF-only models (SmolLM2, Qwen) can run on the transformers engine and,
later, be fine-tuned. transformers dequantizes the GGUF (`gguf_file=`); we then save a plain float checkpoint.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def gguf_to_hf(gguf: Path, out_dir: Path, dtype: torch.dtype = torch.float32) -> Path:
    """Write config.json + safetensors + tokenizer (with the GGUF's chat template) to `out_dir`, atomically."""
    if (out_dir / "config.json").exists():
        return out_dir
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype)
    config = loaded.config
    # The dequantized weights are plain floats now: a saved quantization_config would mislead loaders.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=dtype)
    fresh.load_state_dict(loaded.state_dict())
    fresh.generation_config = loaded.generation_config
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    fresh.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    tmp.rename(out_dir)
    return out_dir
