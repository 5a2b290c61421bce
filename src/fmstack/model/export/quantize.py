"""One model, several quantizations: `fmstack model quantize SOURCE --quant q8_0,q4_k_m,...`.

The source is a registry model or a path: a Hugging Face Llama checkpoint is exported to an f16 GGUF first (the
highest-precision variant, kept and registered as NAME-f16 because `model compare` measures every other variant
against it); a GGUF in f32/f16/bf16 is quantized as it is. A GGUF that is already quantized is refused unless
`allow_requantize`: its weights already carry one rounding error, and quantizing again adds a second one on top.

Every variant is written by llama.cpp's quantizer to a temporary file and renamed into place, and registered only
once it is complete, so a failure or Ctrl-C never leaves a half-written model in the registry. With a calibration
text, an importance matrix (`export.imatrix`) is computed once on the highest-precision file and given to every
quantization (llama.cpp uses it for the k-quants and i-quants, and ignores it for q8_0 and the float types).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import llama_cpp

from fmstack.core.config import Settings
from fmstack.core.errors import InvalidRequest
from fmstack.core.registry import Registry
from fmstack.model.export.gguf import check_name, export_gguf, llama_quantize
from fmstack.model.export.imatrix import Importance, importance_matrix

# Every file type llama.cpp's quantizer knows, by the name llama-quantize uses (q4_k_m, iq4_xs, f16, ...).
QUANT_TYPES: dict[str, int] = {
    name.removeprefix("LLAMA_FTYPE_MOSTLY_").lower(): getattr(llama_cpp, name)
    for name in dir(llama_cpp)
    if name.startswith("LLAMA_FTYPE_MOSTLY_") and not name.endswith("_MOE")
} | {"f32": llama_cpp.LLAMA_FTYPE_ALL_F32}
# llama.cpp refuses these without an importance matrix (llama-quantize says so too): too few bits to guess.
NEEDS_IMATRIX = {"iq1_s", "iq1_m", "iq2_xxs", "iq2_xs", "iq2_s", "q2_k_s"}
FLOAT_TYPES = {"F32", "F16", "BF16"}
QK_K = 256  # values per k-quant super-block along a row
K_QUANT_TYPES = {"Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ4_XS",
                 "IQ1_S", "IQ1_M", "TQ1_0", "TQ2_0"}  # fmt: skip

Progress = Callable[[str, int, int], None]  # (stage, done, total); total 0: no count known


@dataclass(frozen=True)
class Source:
    """What to quantize from: a GGUF file, or a Hugging Face checkpoint to export to f16 first."""

    name: str  # the variants are registered as NAME-QUANT
    path: Path
    is_gguf: bool
    file_type: str  # "f16", "q4_1", ... for a GGUF; "hf" for a checkpoint
    quantized: bool
    context_length: int | None


@dataclass
class Variant:
    """One written and registered file."""

    name: str
    quant: str
    path: Path
    size_bytes: int
    tensor_types: dict[str, int]  # GGML type -> number of tensors
    # k-quant fallbacks: tensor -> the type llama.cpp used because its rows are not a multiple of 256
    fallbacks: dict[str, str] = field(default_factory=dict)
    imatrix: bool = False


@dataclass
class Quantized:
    source: str
    variants: list[Variant]
    imatrix: dict | None  # {"text": ..., "tokens": N, "chunks": N, "tensors": N} when one was computed


def parse_quants(text: str) -> list[str]:
    """`q8_0,q4_k_m` -> ["q8_0", "q4_k_m"]; an unknown name is an error listing the known ones."""
    quants = list(dict.fromkeys(q.strip().lower() for q in text.split(",") if q.strip()))
    if not quants:
        raise InvalidRequest("--quant is empty; give one or more of q8_0, q6_k, q5_k_m, q4_k_m, q3_k_m, q2_k.")
    if unknown := [q for q in quants if q not in QUANT_TYPES]:
        raise InvalidRequest(
            f"--quant {unknown[0]!r} is not a type llama.cpp knows; use one of {', '.join(sorted(QUANT_TYPES))}."
        )
    return quants


def resolve_source(source: str, settings: Settings, name: str | None = None) -> Source:
    """A registry model name, a GGUF file or a Hugging Face checkpoint folder, checked to be a model."""
    path = Path(source).expanduser()
    registered = None
    if not path.exists():
        spec = Registry(settings).get(source)  # unknown name: NotFound, one line
        if spec.engine not in ("llamacpp", "transformers"):
            raise InvalidRequest(f"'{source}' runs on {spec.engine}; quantize a llamacpp or transformers model.")
        path, registered = spec.local_path(settings), spec
    label = check_name(name or (source if registered else path.name.removesuffix(".gguf")))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InvalidRequest(f"{path}: no config.json, so not a Hugging Face checkpoint or a model.")
        return Source(label, path, False, "hf", False, None)
    file_type, quantized, context = _gguf_kind(path)
    return Source(label, path, True, file_type, quantized, registered.context_length if registered else context)


def _gguf_kind(path: Path) -> tuple[str, bool, int | None]:
    """(file type, whether its matrices are quantized, context length) of a GGUF file."""
    try:
        reader = gguf.GGUFReader(path)
    except Exception as exc:  # not GGUF at all: gguf raises ValueError, struct.error, ...
        raise InvalidRequest(f"{path}: not a GGUF file or a Hugging Face checkpoint folder ({exc}).") from None
    matrices = Counter(t.tensor_type.name for t in reader.tensors if len(t.shape) > 1)
    quantized = any(kind not in FLOAT_TYPES for kind in matrices)
    arch = _field(reader, "general.architecture")
    context = _field(reader, f"{arch}.context_length") if arch else None
    main = matrices.most_common(1)[0][0].lower() if matrices else "unknown"
    return main, quantized, int(context) if context is not None else None


def _field(reader: gguf.GGUFReader, key: str):
    value = reader.fields.get(key)
    if value is None:
        return None
    contents = value.contents()
    return contents.decode() if isinstance(contents, bytes) else contents


def check_plan(source: Source, quants: list[str], allow_requantize: bool, calibration: Path | None) -> None:
    """Everything that would fail later, before anything is written."""
    if source.quantized and not allow_requantize:
        raise InvalidRequest(
            f"{source.path} is already quantized ({source.file_type}); quantizing it again compounds the rounding "
            "error. Quantize from the f16/f32 GGUF or the Hugging Face checkpoint, or pass --allow-requantize."
        )
    if calibration is not None and not calibration.is_file():
        raise InvalidRequest(f"--imatrix {calibration}: no such file; give a plain-text calibration file.")
    if calibration is None and (needs := [q for q in quants if q in NEEDS_IMATRIX]):
        raise InvalidRequest(
            f"--quant {needs[0]} needs an importance matrix (llama.cpp refuses it without one); add --imatrix TEXT."
        )


def quantize_model(
    source: Source,
    quants: list[str],
    settings: Settings,
    register: Callable[[Variant, int], None],
    *,
    allow_requantize: bool = False,
    calibration: Path | None = None,
    progress: Progress | None = None,
) -> Quantized:
    """Write and register NAME-QUANT for each quant (and NAME-f16 when the source is a checkpoint)."""
    report = progress or (lambda *_: None)
    check_plan(source, quants, allow_requantize, calibration)
    base, variants = source.path, []
    context = source.context_length
    if not source.is_gguf:
        exported = export_gguf(source.path, _target(settings, source.name, "f16"), "f16", f"{source.name}-f16",
                               lambda stage, done, total: report(f"f16: {stage}", done, total))  # fmt: skip
        base, context = exported.path, exported.context_length
        variants.append(_describe(f"{source.name}-f16", "f16", base, False))
        register(variants[-1], context)
    importance = None
    if calibration is not None:
        text = calibration.read_text(encoding="utf-8", errors="replace")
        importance = importance_matrix(base, text, settings.threads, progress=lambda done, total: report(
            "importance matrix", done, total))  # fmt: skip
    entries = importance.as_llama() if importance else None
    for quant in quants:
        if quant == "f16" and not source.is_gguf:
            continue  # written above
        name = f"{source.name}-{quant}"
        target = _target(settings, source.name, quant)
        report(f"{quant}: quantizing", 0, 0)
        _quantize_atomic(base, target, quant, entries, allow_requantize)
        variants.append(_describe(name, quant, target, importance is not None))
        register(variants[-1], context or 0)
    return Quantized(str(source.path), variants, _imatrix_info(calibration, importance))


def _target(settings: Settings, name: str, quant: str) -> Path:
    return settings.models_dir / f"{name}-{quant}.gguf"


def _quantize_atomic(base: Path, target: Path, quant: str, entries, allow_requantize: bool) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    try:
        llama_quantize(base, partial, QUANT_TYPES[quant], quant, imatrix=entries, allow_requantize=allow_requantize)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)


def _describe(name: str, quant: str, path: Path, imatrix: bool) -> Variant:
    """Sizes and tensor types as llama.cpp wrote them, with the tensors that fell back from a k-quant."""
    tensors = gguf.GGUFReader(path).tensors
    fallbacks = {}
    if "_k" in quant or quant.startswith(("iq", "tq")):  # k-quants and i-quants pack rows by super-blocks
        for t in tensors:  # GGUF shapes are (row length, rows, ...)
            if len(t.shape) > 1 and int(t.shape[0]) % QK_K and t.tensor_type.name not in K_QUANT_TYPES | FLOAT_TYPES:
                fallbacks[t.name] = t.tensor_type.name
    types = Counter(t.tensor_type.name for t in tensors)
    return Variant(name, quant, path, path.stat().st_size, dict(types), fallbacks, imatrix)


def _imatrix_info(calibration: Path | None, importance: Importance | None) -> dict | None:
    if importance is None:
        return None
    return {"text": str(calibration), "tokens": importance.tokens, "chunks": importance.chunks,
            "tensors": len(importance.values)}  # fmt: skip
