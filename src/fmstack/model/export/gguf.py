"""Hugging Face Llama checkpoint -> GGUF file that llama.cpp (and so `fmstack up`) serves.

f32 and f16 files are written here with the `gguf` package: llama hyperparameters, the tokenizer (see
`export.tokenizer`) and every tensor renamed to llama.cpp's names. Hugging Face stores the query and key
projections with each head's rotary pairs split into two halves (it rotates with `rotate_half`), while llama.cpp's
llama architecture rotates adjacent pairs; so q_proj and k_proj rows are permuted per head, as llama.cpp's own
converter does. q8_0 and q4_k_m are made by llama.cpp's quantizer from an f32 file, so the quantized blocks are
exactly what llama.cpp expects. Every output appears atomically (temporary file, then rename).
"""

from __future__ import annotations

import ctypes
import json
import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import gguf
import llama_cpp
import numpy as np
import torch
from safetensors import safe_open
from transformers import LlamaConfig

from fmstack.core.errors import FmstackError, InvalidRequest
from fmstack.model.export.tokenizer import read_vocab

# --quant -> llama.cpp file type. f32/f16 are written directly; the others are quantized by llama.cpp.
QUANTS = {
    "f32": gguf.LlamaFileType.ALL_F32,
    "f16": gguf.LlamaFileType.MOSTLY_F16,
    "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
    "q4_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M,
}
NAME = re.compile(r"^[A-Za-z0-9][\w.-]*$")

# (stage, done, total): stage is "writing" (bytes) or "quantizing" (total 0: llama.cpp reports no progress).
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Exported:
    """What was written, for the CLI to report and the registry to serve."""

    path: Path
    quant: str
    size_bytes: int
    context_length: int
    tensor_types: dict[str, int]  # GGML type name -> number of tensors of that type
    fallback_tensors: int  # q4_k_m only: tensors llama.cpp could not k-quantize (rows not a multiple of 256)


def check_name(name: str) -> str:
    """A registry name that is also a safe file name."""
    if not NAME.match(name):
        raise InvalidRequest(
            f"--name {name!r} is not a valid model name; use letters, digits, '.', '_' and '-' (e.g. my-model)."
        )
    return name


def check_quant(quant: str) -> str:
    if quant not in QUANTS:
        raise InvalidRequest(f"--quant {quant!r} is not supported; use one of {', '.join(QUANTS)}.")
    return quant


def load_config(checkpoint: Path) -> LlamaConfig:
    """The checkpoint's config, after checking it is a Llama causal LM llama.cpp can run as `llama`."""
    if not checkpoint.is_dir():
        raise InvalidRequest(
            f"{checkpoint} is not a folder; pass a Hugging Face checkpoint folder (config.json, "
            "*.safetensors, tokenizer.json)."
        )
    path = checkpoint / "config.json"
    if not path.is_file():
        raise InvalidRequest(
            f"{checkpoint}: no config.json, so this is not a Hugging Face checkpoint. Pass the "
            "folder save_pretrained() wrote (e.g. the output of `fmstack train pretrain`)."
        )
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"{path}: not valid JSON ({exc}).") from exc
    architectures = raw.get("architectures") or []
    if raw.get("model_type") != "llama" or "LlamaForCausalLM" not in architectures:
        raise InvalidRequest(
            f"{path}: field 'architectures' is {architectures} (model_type {raw.get('model_type')!r}); GGUF export "
            "supports LlamaForCausalLM checkpoints (fmstack pretrain, SmolLM2 and fine-tunes of them)."
        )
    config = LlamaConfig.from_pretrained(checkpoint)
    if config.hidden_act != "silu":
        raise InvalidRequest(f"{path}: field 'hidden_act' is {config.hidden_act!r}; llama.cpp's llama uses silu.")
    rope = _rope_parameters(config)
    if rope.get("rope_type", "default") != "default":
        raise InvalidRequest(
            f"{path}: field 'rope_scaling' is {rope.get('rope_type')!r}; export supports unscaled RoPE only."
        )
    if not list(checkpoint.glob("*.safetensors")):
        raise InvalidRequest(
            f"{checkpoint}: no *.safetensors weights; save with save_pretrained(safe_serialization=True)."
        )
    return config


def export_gguf(checkpoint: Path, out: Path, quant: str, name: str, progress: Progress | None = None) -> Exported:
    """Write `checkpoint` as a GGUF file at `out`. Everything is checked before the first byte is written."""
    check_quant(quant)
    config = load_config(checkpoint)
    vocab = read_vocab(checkpoint, config.vocab_size)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    source = out.with_name(out.name + ".f32.partial")  # what llama.cpp quantizes
    try:
        if quant in ("f32", "f16"):
            plan = _write(checkpoint, config, vocab, name, partial, quant, progress)
            types = Counter("F16" if dtype == np.float16 else "F32" for _, dtype in plan)
        else:
            plan = _write(checkpoint, config, vocab, name, source, "f32", progress)
            _quantize(source, partial, quant, progress)
            types = Counter(t.tensor_type.name for t in gguf.GGUFReader(partial).tensors)  # what llama.cpp chose
        partial.replace(out)
    finally:  # an interrupted export leaves no half-written file behind
        source.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)
    # k-quants pack 256 values per super-block along a row; llama.cpp stores shorter-row matrices as Q5_0/Q8_0.
    fallback = sum(len(shape) > 1 and shape[-1] % 256 != 0 for shape, _ in plan) if quant == "q4_k_m" else 0
    return Exported(out, quant, out.stat().st_size, config.max_position_embeddings, dict(types), fallback)


def _write(checkpoint, config, vocab, name: str, path: Path, quant: str, progress) -> list[tuple[tuple, np.dtype]]:
    """Write the GGUF; return each tensor's (Hugging Face shape, dtype written)."""
    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    _add_hyperparameters(writer, config, name, QUANTS[quant])
    vocab.add_to(writer)
    with ExitStack() as stack:
        # GGUF puts every tensor's name, shape and type before the data, so describe them all, then stream them.
        tensors = [(n, shape, _dtype(quant, shape), load) for n, shape, load in _tensors(checkpoint, config, stack)]
        for gguf_name, shape, dtype, _ in tensors:
            writer.add_tensor_info(gguf_name, shape, dtype, math.prod(shape) * dtype.itemsize)
        total = sum(math.prod(shape) * dtype.itemsize for _, shape, dtype, _ in tensors)
        try:
            writer.write_header_to_file(path)
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            done = 0
            for _, _, dtype, load in tensors:
                data = load().astype(dtype)
                writer.write_tensor_data(data)
                done += data.nbytes
                if progress:
                    progress("writing", done, total)
        finally:
            writer.close()
    return [(shape, dtype) for _, shape, dtype, _ in tensors]


def _add_hyperparameters(writer: gguf.GGUFWriter, config: LlamaConfig, name: str, file_type: int) -> None:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(float(_rope_parameters(config).get("rope_theta", 10000.0)))
    writer.add_rope_dimension_count(head_dim)
    if head_dim * config.num_attention_heads != config.hidden_size:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(int(file_type))


def _rope_parameters(config: LlamaConfig) -> dict:
    """transformers 5 keeps RoPE settings in `rope_parameters`; 4.x in `rope_theta` and `rope_scaling`."""
    params = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
    params.setdefault("rope_type", params.pop("type", "default"))
    if getattr(config, "rope_theta", None) is not None:
        params.setdefault("rope_theta", config.rope_theta)
    return params


def _tensors(checkpoint: Path, config: LlamaConfig, stack: ExitStack) -> Iterator[tuple[str, tuple, Callable]]:
    """(llama.cpp name, shape, loader) for every weight, loaded lazily so memory holds one tensor at a time."""
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    for file in sorted(checkpoint.glob("*.safetensors")):
        weights = stack.enter_context(safe_open(file, framework="pt"))
        for hf_name in weights.keys():  # noqa: SIM118 (safe_open is not a mapping)
            if hf_name.endswith("rotary_emb.inv_freq") or (hf_name == "lm_head.weight" and config.tie_word_embeddings):
                continue  # recomputed by llama.cpp / tied: llama.cpp reuses token_embd when output.weight is absent
            gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if gguf_name is None:
                raise InvalidRequest(
                    f"{file}: tensor {hf_name!r} has no llama.cpp equivalent; export supports "
                    "plain Llama weights (merge LoRA adapters first)."
                )
            shape = tuple(weights.get_slice(hf_name).get_shape())
            yield gguf_name, shape, _loader(weights, hf_name, config)


def _loader(weights, hf_name: str, config: LlamaConfig) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        data = weights.get_tensor(hf_name).to(torch.float32).numpy()
        if ".q_proj." in hf_name:
            return _rotary_pairs(data, config.num_attention_heads)
        if ".k_proj." in hf_name:
            return _rotary_pairs(data, config.num_key_value_heads)
        return data

    return load


def _rotary_pairs(weight: np.ndarray, heads: int) -> np.ndarray:
    """Reorder each head's rows from Hugging Face's (first halves, second halves) to llama.cpp's adjacent pairs."""
    rows = weight.shape[0]
    split = weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:])
    return split.swapaxes(1, 2).reshape(weight.shape)


def _dtype(quant: str, shape: tuple) -> np.dtype:
    """f16 for matrices in an f16 file; vectors (norms, biases) stay f32, as llama.cpp computes them in f32."""
    return np.dtype(np.float16 if quant == "f16" and len(shape) > 1 else np.float32)


def _quantize(source: Path, target: Path, quant: str, progress: Progress | None) -> None:
    if progress:
        progress("quantizing", 0, 0)
    llama_quantize(source, target, QUANTS[quant], quant)


def llama_quantize(
    source: Path, target: Path, ftype: int, label: str, *, imatrix: object = None, allow_requantize: bool = False
) -> None:
    """llama.cpp's quantizer on a GGUF file. `imatrix` is a NULL-terminated ctypes array of
    `llama_model_imatrix_data` (see `export.imatrix`), kept alive by the caller for the duration of the call."""
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.allow_requantize = allow_requantize
    if imatrix is not None:
        params.imatrix = imatrix
    # llama.cpp logs a line per tensor through llama-cpp-python's logger, and each k-quant fallback at error level
    # (we count and report those ourselves); a real failure is the return code.
    log = logging.getLogger("llama-cpp-python")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        failed = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    finally:
        log.setLevel(level)
    if failed:
        raise FmstackError(f"llama.cpp could not quantize {source} to {label} (code {failed}).")
