"""Importance matrix (llama.cpp's imatrix) from a calibration text, for quantizing low-bit types with less damage.

A weight column that meets large activations matters more than one that meets small ones, so llama.cpp's
quantizers weigh each column's rounding error by the mean square of the activations entering it. llama.cpp's
`llama-imatrix` program collects those means; llama-cpp-python ships no such program, but it exposes the
scheduler's eval callback (`llama_context_params.cb_eval`), which hands us every graph node as it is computed. For
each matrix multiplication whose first operand is a model weight (`blk.N.*.weight`, `output.weight`), we read the
second operand — the activations, one row per token — and add up their squares per column, as `llama-imatrix`
does. The means go to `llama_model_quantize` through `llama_model_imatrix_data` (name, values, count).

ggml's tensor struct is not wrapped by llama-cpp-python, so it is declared here; its layout is checked against
ggml's own accessors (`ggml_get_name`, `ggml_get_data`, `ggml_nelements`) on the first node, and a build whose
layout differs is refused with one line rather than read wrongly. Mixture-of-experts weights (MUL_MAT_ID) get no
entries: llama.cpp quantizes them without importance data.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import llama_cpp
import numpy as np
from llama_cpp._ggml import libggml
from llama_cpp._internals import LlamaBatch, LlamaContext, LlamaModel

from fmstack.core.errors import FmstackError, InvalidRequest
from fmstack.engines.llamacpp import load_gguf

GGML_MAX_DIMS, GGML_MAX_SRC, GGML_MAX_NAME, GGML_MAX_OP_PARAMS = 4, 10, 64, 64
GGML_TYPE_F32 = 0
MIN_TOKENS = 16  # llama-imatrix also skips batches this small: too few rows to say anything per column


class GgmlTensor(ctypes.Structure):
    """`struct ggml_tensor` of ggml.h (checked at run time, see `_check_layout`)."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * GGML_MAX_DIMS),
        ("nb", ctypes.c_size_t * GGML_MAX_DIMS),
        ("op", ctypes.c_int),
        ("op_params", ctypes.c_int32 * (GGML_MAX_OP_PARAMS // 4)),
        ("flags", ctypes.c_int32),
        ("src", ctypes.c_void_p * GGML_MAX_SRC),
        ("view_src", ctypes.c_void_p),
        ("view_offs", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("name", ctypes.c_char * GGML_MAX_NAME),
        ("extra", ctypes.c_void_p),
        ("padding", ctypes.c_char * 8),
    ]


for _fn, _res, _args in (
    ("ggml_get_name", ctypes.c_void_p, [ctypes.c_void_p]),
    ("ggml_get_data", ctypes.c_void_p, [ctypes.c_void_p]),
    ("ggml_nelements", ctypes.c_int64, [ctypes.c_void_p]),
    ("ggml_nbytes", ctypes.c_size_t, [ctypes.c_void_p]),
    ("ggml_is_contiguous", ctypes.c_bool, [ctypes.c_void_p]),
    ("ggml_op_name", ctypes.c_char_p, [ctypes.c_int]),
    ("ggml_backend_tensor_get", None, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]),
):
    getattr(libggml, _fn).restype = _res
    getattr(libggml, _fn).argtypes = _args


@dataclass
class Importance:
    """Mean squared activation per input column of each weight matrix, and what it was computed from."""

    values: dict[str, np.ndarray]
    tokens: int
    chunks: int

    def as_llama(self) -> ctypes.Array:
        """The NULL-terminated `llama_model_imatrix_data` array `llama_model_quantize` reads. It points into
        `self.values`, which must stay alive while llama.cpp uses it (it copies them at the start)."""
        entries = (llama_cpp.llama_model_imatrix_data * (len(self.values) + 1))()
        for entry, (name, column_means) in zip(entries, self.values.items(), strict=False):
            entry.name = name.encode()
            entry.data = column_means.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            entry.size = column_means.size
        return entries


@dataclass
class _Collector:
    """Sums of squares and row counts per weight, filled by the eval callback."""

    sums: dict[str, np.ndarray] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    checked: bool = False
    error: str | None = None

    def __call__(self, pointer: int, ask: bool, _user_data: int) -> bool:
        try:
            return self._visit(pointer, ask)
        except Exception as exc:  # an exception cannot cross the C callback: keep it, stop the graph
            self.error = f"{type(exc).__name__}: {exc}"
            return False

    def _visit(self, pointer: int, ask: bool) -> bool:
        if not self.checked:
            _check_layout(pointer)
            self.checked = True
        node = GgmlTensor.from_address(pointer)
        if libggml.ggml_op_name(node.op) != b"MUL_MAT" or not (node.src[0] and node.src[1]):
            return not ask  # not ours: do not stop for it; when asked about it, say no
        weight, activations = GgmlTensor.from_address(node.src[0]), GgmlTensor.from_address(node.src[1])
        name = weight.name.decode()
        if not _is_weight(name) or activations.type != GGML_TYPE_F32 or activations.ne[1] < MIN_TOKENS:
            return not ask
        if ask:
            return True
        if libggml.ggml_is_contiguous(node.src[1]):
            self._add(name, node.src[1], activations)
        return True

    def _add(self, name: str, pointer: int, activations: GgmlTensor) -> None:
        columns = activations.ne[0]
        rows = np.empty(libggml.ggml_nelements(pointer), dtype=np.float32)
        libggml.ggml_backend_tensor_get(pointer, rows.ctypes.data, 0, rows.nbytes)  # any backend's memory
        rows = rows.reshape(-1, columns).astype(np.float64)
        self.sums[name] = self.sums.get(name, 0.0) + np.square(rows).sum(axis=0)
        self.counts[name] = self.counts.get(name, 0) + len(rows)


def _is_weight(name: str) -> bool:
    return (name.startswith("blk.") and name.endswith(".weight")) or name == "output.weight"


def _check_layout(pointer: int) -> None:
    node = GgmlTensor.from_address(pointer)
    same = (
        libggml.ggml_get_name(pointer) - pointer == GgmlTensor.name.offset
        and libggml.ggml_get_data(pointer) == node.data
        and libggml.ggml_nelements(pointer) == int(np.prod(list(node.ne)))
    )
    if not same:
        raise FmstackError(
            "this llama.cpp build's ggml_tensor layout differs from the one fmstack reads, so the importance "
            "matrix cannot be collected; quantize without --imatrix."
        )


def importance_matrix(
    gguf: Path, text: str, threads: int, chunk: int = 512, progress: Callable[[int, int], None] | None = None
) -> Importance:
    """Run the model over `text` in chunks of `chunk` tokens (each starting with BOS where the model uses one) and
    return each weight's mean squared input activation per column."""
    collector = _Collector()
    callback = llama_cpp.ggml_backend_sched_eval_callback(collector)  # referenced until the context is freed
    model = load_gguf(gguf)
    try:
        chunks = token_chunks(model, text, chunk, "--imatrix: the calibration text")
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = params.n_batch = params.n_ubatch = window(model, chunk)
        params.n_threads = params.n_threads_batch = threads
        params.cb_eval, params.cb_eval_user_data = callback, None
        context = LlamaContext(model=model, params=params, verbose=False)
        batch = LlamaBatch(n_tokens=window(model, chunk), embd=0, n_seq_max=1, verbose=False)
        for done, tokens in enumerate(chunks, 1):
            context.kv_cache_clear()
            batch.set_batch(tokens, n_past=0, logits_all=True)  # every position: the last layer sees every row
            context.decode(batch)
            if collector.error:
                raise FmstackError(f"collecting the importance matrix failed: {collector.error}")
            if progress:
                progress(done, len(chunks))
        context.close()
    finally:
        model.close()
    values = {n: (collector.sums[n] / collector.counts[n]).astype(np.float32) for n in collector.sums}
    return Importance(values, sum(map(len, chunks)), len(chunks))


def window(model: LlamaModel, chunk: int) -> int:
    """Tokens per window: `chunk`, or fewer for a model trained on a shorter context."""
    return min(chunk, llama_cpp.llama_model_n_ctx_train(model.model))


def token_chunks(model: LlamaModel, text: str, chunk: int, what: str, limit: int | None = None) -> list[list[int]]:
    """`text` as consecutive windows of at most `chunk` tokens (or the model's trained context, if shorter; at most
    `limit` text tokens in all), each starting with BOS where the model's tokenizer adds one, as llama.cpp's
    perplexity and imatrix programs read a text."""
    chunk = window(model, chunk)
    bos = [model.token_bos()] if llama_cpp.llama_vocab_get_add_bos(model.vocab) and model.token_bos() >= 0 else []
    tokens = model.tokenize(text.encode(), add_bos=False, special=False)[:limit]
    step = chunk - len(bos)
    chunks = [bos + tokens[i : i + step] for i in range(0, len(tokens), step)]
    chunks = [c for c in chunks if len(c) >= MIN_TOKENS]
    if not chunks:
        raise InvalidRequest(
            f"{what} has {len(tokens)} tokens; give at least {MIN_TOKENS} (a few thousand tokens of text like the "
            "model's real inputs is typical)."
        )
    return chunks
