"""The starting point of a fine-tune: any registry model (or a local folder) as a Hugging Face checkpoint.

Trainers need PyTorch weights, but most of our local models are GGUF files for llama.cpp. A GGUF model is
converted once (transformers dequantizes it) and cached under `models_dir/hf/NAME`. Because a silent conversion
bug would poison every fine-tune made from it, the cached checkpoint is checked against llama.cpp itself: both
must tokenize fixed chat prompts identically and predict (nearly) the same next token at several positions. The
numbers are stored beside the cache (`NAME.verification.json`), so the check runs once.

The GGUF is quantized (SmolLM2 ships Q4_1) and llama.cpp also quantizes activations (Q8) inside its matrix
products, while the converted checkpoint computes in float32 with the dequantized weights, so the logits differ
slightly. Measured on SmolLM2-135M Q4_1 (3 prompts, 12 positions): cosine similarity of the logit vectors
0.995-0.9999, max |difference| 1.8 (the logits span about 34), the same top-1 token at 11 of 12 positions (the
miss is a near-tie at the start of the answer: 25.33 vs 25.24, and llama.cpp picks our second). Hence the
thresholds: cosine >= 0.98 everywhere (four times the measured 1 - cosine), top-1 agreement >= 75 %, and our
top-1 token always within llama.cpp's top 5. A real bug (a wrong tensor order, a permuted attention head, a
shifted vocabulary) lands far below them (two swapped decoder layers: see the tests).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from fmstack.core.config import Settings
from fmstack.core.errors import InvalidRequest, ModelUnavailable
from fmstack.core.registry import ModelSpec, Registry
from fmstack.core.sources import Progress

# Fixed prompts: chat-formatted like fine-tuning data, one of them long enough to check deep positions.
VERIFY_PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "You are a helpful assistant who answers briefly."},
        {"role": "user", "content": "Write one sentence about the ocean and why tides happen."},
    ],
    [{"role": "user", "content": "List three prime numbers, then explain in a few words what a prime is."}],
]
POSITIONS_PER_PROMPT = 4
MIN_COSINE = 0.98  # at every checked position
MIN_TOP1_AGREEMENT = 0.75  # share of checked positions where both pick the same next token


def resolve_checkpoint(name_or_path: str, settings: Settings, progress: Progress | None = None) -> Path:
    """A Hugging Face checkpoint folder for `name_or_path`: a local folder as is, or a registry model's files.

    Raises InvalidRequest for names that cannot be trained (remote models, unknown names, folders without a
    config.json) and ModelUnavailable when a converted GGUF fails the logits check.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise InvalidRequest(f"{path} has no config.json; give a Hugging Face checkpoint folder or a model name.")
        return path
    spec = Registry(settings).get(name_or_path)
    if spec.engine == "openai":
        raise InvalidRequest(
            f"'{spec.name}' is a remote model ({spec.base_url}); its weights are not here, so it cannot be "
            "fine-tuned. Pick a local model from `fmstack models`."
        )
    if spec.engine == "llamacpp":
        return converted(spec, settings, progress)
    return spec.local_path(settings, progress)


def converted(spec: ModelSpec, settings: Settings, progress: Progress | None = None) -> Path:
    """The GGUF model `spec` as a verified Hugging Face checkpoint, converted and checked on first use."""
    from fmstack.model.convert import gguf_to_hf

    gguf = spec.local_path(settings, progress)
    out = settings.models_dir / "hf" / spec.name
    report_path = verification_path(out)
    if (out / "config.json").exists() and report_path.exists() and json.loads(report_path.read_text())["passed"]:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    gguf_to_hf(gguf, out)
    report = verify_against_gguf(out, gguf, settings.threads)
    report["gguf"] = str(gguf)
    _write_json(report_path, report)
    if not report["passed"]:
        shutil.rmtree(out, ignore_errors=True)  # never leave an unverified checkpoint where trainers find it
        raise ModelUnavailable(
            f"Converting '{spec.name}' from GGUF gave a checkpoint whose logits disagree with llama.cpp "
            f"({report['reason']}); see {report_path}. Upgrade transformers or convert another quantization."
        )
    return out


def verification_path(checkpoint: Path) -> Path:
    return checkpoint.with_name(checkpoint.name + ".verification.json")


def verify_against_gguf(checkpoint: Path, gguf: Path, threads: int) -> dict:
    """Compare next-token logits of the checkpoint (PyTorch) and the GGUF (llama.cpp) on VERIFY_PROMPTS."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    return compare_with_llamacpp(tokenizer, model, gguf, threads)


def compare_with_llamacpp(tokenizer, model, gguf: Path, threads: int) -> dict:
    """The verification report of an in-memory model against the GGUF it should equal."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=512, n_threads=threads, logits_all=False, verbose=False)
    try:
        checks = [_compare_prompt(messages, tokenizer, model, llm) for messages in VERIFY_PROMPTS]
    finally:
        llm.close()
    return _judge(checks)


def _compare_prompt(messages: list[dict], tokenizer, model, llm) -> dict:
    """Logits at a few positions of one prompt; llama.cpp is fed the prompt chunk by chunk up to each position."""
    import llama_cpp

    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False).input_ids
    llama_ids = llm.tokenize(text.encode(), add_bos=False, special=True)
    if llama_ids != ids:
        return {"tokens": len(ids), "same_tokens": False, "positions": []}
    with torch.inference_mode():
        reference = model(input_ids=torch.tensor([ids])).logits[0].numpy()
    ends = sorted({round(x) for x in np.linspace(len(ids) / POSITIONS_PER_PROMPT, len(ids), POSITIONS_PER_PROMPT)})
    llm.reset()
    positions, start = [], 0
    for end in ends:
        llm.eval(ids[start:end])
        # With logits_all=False llama.cpp keeps only the last position's logits, in its own buffer.
        last = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))
        theirs, ours = last.astype(np.float64), reference[end - 1].astype(np.float64)
        cosine = float(ours @ theirs / (np.linalg.norm(ours) * np.linalg.norm(theirs)))
        positions.append(
            {
                "position": end - 1,
                "cosine": cosine,
                "max_abs_diff": float(np.abs(ours - theirs).max()),
                "top1_match": int(ours.argmax()) == int(theirs.argmax()),
                "top1_in_their_top5": bool(int(ours.argmax()) in np.argsort(theirs)[-5:]),
            }
        )
        start = end
    return {"tokens": len(ids), "same_tokens": True, "positions": positions}


def _judge(checks: list[dict]) -> dict:
    """Pass/fail with the numbers that decided it."""
    positions = [p for check in checks for p in check["positions"]]
    summary = {
        "prompts": len(checks),
        "positions": len(positions),
        "min_cosine": min((p["cosine"] for p in positions), default=0.0),
        "max_abs_diff": max((p["max_abs_diff"] for p in positions), default=float("inf")),
        "top1_agreement": sum(p["top1_match"] for p in positions) / len(positions) if positions else 0.0,
        "top1_in_their_top5": all(p["top1_in_their_top5"] for p in positions),
        "thresholds": {"min_cosine": MIN_COSINE, "min_top1_agreement": MIN_TOP1_AGREEMENT},
        "checks": checks,
    }
    if not all(check["same_tokens"] for check in checks):
        reason = "the two tokenizers split the same prompt differently"
    elif summary["min_cosine"] < MIN_COSINE:
        reason = f"logit cosine similarity {summary['min_cosine']:.4f} < {MIN_COSINE}"
    elif summary["top1_agreement"] < MIN_TOP1_AGREEMENT:
        reason = f"top-1 agreement {summary['top1_agreement']:.2f} < {MIN_TOP1_AGREEMENT}"
    elif not summary["top1_in_their_top5"]:
        reason = "a predicted token is not even in llama.cpp's top 5"
    else:
        reason = ""
    return {"passed": not reason, "reason": reason, **summary}


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
