"""lm-evaluation-harness against a real fmstack server, on small local tasks shipped here (lm_eval_tasks/: YAML and
JSONL, no hub download):

- `local-completions` scores a multiple-choice task through `/v1/completions` with `echo` and `logprobs` (the prompt
  tokens' log-probabilities); its accuracy, and every choice's log-likelihood, match the same task scored in-process
  with llama-cpp-python on the same GGUF.
- `local-chat-completions` runs a generate-until task through `/v1/chat/completions`.

The harness needs a tokenizer to split context from continuation: SmolLM2's, read from its GGUF by transformers and
saved as Hugging Face files (`tokenizer=` a local directory), with `tokenized_requests=False` so the server gets text.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fmstack.core.config import get_settings
from fmstack.core.registry import Registry
from tests.conftest import TEST_MODEL

pytest.importorskip("lm_eval")

pytestmark = pytest.mark.slow
TASKS = Path(__file__).parent / "lm_eval_tasks"


@pytest.fixture(scope="module")
def gguf() -> Path:
    settings = get_settings()
    return Registry(settings).get(TEST_MODEL).local_path(settings)


@pytest.fixture(scope="module")
def tokenizer(gguf, tmp_path_factory) -> Path:
    """SmolLM2's tokenizer as Hugging Face files, read from the GGUF (the hub is not needed)."""
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("tokenizer")
    AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(out)
    return out


def lm_eval(model: str, model_args: dict, task: str, out: Path, *extra: str) -> tuple[dict, list[dict]]:
    """Run the harness's own CLI; (the task's results, its logged samples)."""
    args = ",".join(f"{k}={v}" for k, v in model_args.items())
    command = [sys.executable, "-m", "lm_eval", "--model", model, "--model_args", args, "--tasks", task]
    command += ["--include_path", str(TASKS), "--output_path", str(out), "--log_samples", *extra]
    env = os.environ | {
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(out / "datasets"),
        "OPENAI_API_KEY": "not-needed",
    }
    # data_files in the YAML are relative to the working directory
    run = subprocess.run(command, cwd=TASKS, env=env, capture_output=True, text=True, timeout=540)
    assert run.returncode == 0, run.stderr[-4000:]
    [results] = glob.glob(str(out / "**" / "results_*.json"), recursive=True)
    [samples] = glob.glob(str(out / "**" / f"samples_{task}_*.jsonl"), recursive=True)
    lines = Path(samples).read_text().splitlines()
    return json.loads(Path(results).read_text())["results"][task], [json.loads(line) for line in lines]


def in_process_logliks(gguf: Path, pairs: list[tuple[str, str]]) -> list[float]:
    """Each continuation's log-likelihood after its context, from llama-cpp-python's logits (flash attention, as the
    server decodes), the context and continuation tokenized apart as the harness does."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=512, logits_all=True, flash_attn=True, n_threads=2, verbose=False)
    out = []
    for context, continuation in pairs:
        ctx = llm.tokenize(context.encode(), add_bos=True, special=False)
        cont = llm.tokenize(continuation.encode(), add_bos=False, special=False)
        llm.reset()
        llm.eval(ctx + cont)
        logits = np.asarray(llm.scores[: len(ctx) + len(cont)], dtype=np.float64)
        logp = logits - logits.max(axis=1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
        out.append(float(sum(logp[len(ctx) + i - 1, t] for i, t in enumerate(cont))))
    llm.close()
    return out


def test_multiple_choice_accuracy_matches_in_process_scoring(server, gguf, tokenizer, tmp_path):
    results, samples = lm_eval(
        "local-completions",
        {
            "model": TEST_MODEL,
            "base_url": f"{server.base}/v1/completions",
            "tokenizer_backend": "huggingface",
            "tokenizer": tokenizer,
            "tokenized_requests": False,
        },
        "fmstack_capitals",
        tmp_path,
    )
    samples.sort(key=lambda s: s["doc_id"])
    pairs = [(a["arg_0"], a["arg_1"]) for s in samples for a in s["arguments"].values()]
    served = [float(r[0][0]) for s in samples for r in s["resps"]]
    mine = in_process_logliks(gguf, pairs)
    assert served == pytest.approx(mine, abs=0.05)  # the same numbers, up to kernel rounding
    k = len(samples[0]["resps"])
    picks = [int(np.argmax(mine[i : i + k])) for i in range(0, len(mine), k)]
    accuracy = float(np.mean([p == s["doc"]["answer"] for p, s in zip(picks, samples, strict=True)]))
    assert results["acc,none"] == pytest.approx(accuracy)
    assert accuracy >= 0.5  # a 135M model knows most of these capitals; chance is 0.25


def test_generate_until_through_chat_completions(server, tmp_path):
    results, samples = lm_eval(
        "local-chat-completions",
        {"model": TEST_MODEL, "base_url": f"{server.base}/v1/chat/completions", "max_retries": 1},
        "fmstack_capitals_gen",
        tmp_path,
        "--apply_chat_template",
    )
    assert len(samples) == 6 and all(s["resps"][0][0].strip() for s in samples)
    matched = [s["filtered_resps"][0].lower() == s["target"].lower() for s in samples]
    assert results["exact_match,city"] == pytest.approx(np.mean(matched))
