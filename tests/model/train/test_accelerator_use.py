"""Training as users with a GPU run it, checked on CPU: the reported tokens/s includes the wait for the device (a
step is timed after its loss and gradient norm are read back), a run that leaves an accelerator idle is told the
batch size that would fill it, and the training benchmark's plain baseline runs on fmstack's device and builds its
data without the test extras."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import time
from pathlib import Path

import pytest
import torch

from fmstack.model.train import memory
from fmstack.model.train.configs import PRESETS, load_config, with_overrides
from fmstack.model.train.pretrain import plan_run, pretrain

ROOT = Path(__file__).parents[3]


def load_benchmark():
    spec = importlib.util.spec_from_file_location("train_bench", ROOT / "benchmarks" / "train.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


@pytest.fixture(scope="module")
def blocks(tmp_path_factory) -> Path:
    """The benchmark's own blocks (Python's language reference topics), built with gensim unimportable."""
    saved = sys.modules.get("gensim")
    sys.modules["gensim"] = None  # `import gensim` now raises ImportError
    try:
        return load_benchmark()._pretrain_blocks(tmp_path_factory.mktemp("data"), 64, 1000)
    finally:
        if saved is None:
            sys.modules.pop("gensim")
        else:
            sys.modules["gensim"] = saved


class SlowNorm:
    """A gradient norm that takes `seconds` to read back, as a GPU's does when the step is still running."""

    def __init__(self, value: torch.Tensor, seconds: float):
        self.value, self.seconds = value, seconds

    def __float__(self) -> float:
        time.sleep(self.seconds)
        return float(self.value)


def test_tokens_per_s_counts_the_wait_for_the_device(blocks, tmp_path, monkeypatch):
    from accelerate import Accelerator

    clip = Accelerator.clip_grad_norm_
    monkeypatch.setattr(Accelerator, "clip_grad_norm_", lambda self, *a, **k: SlowNorm(clip(self, *a, **k), 0.25))
    steps = {"steps": 4, "warmup": 1, "eval_every": 4, "checkpoint_every": 0}
    plan = plan_run(blocks, with_overrides(load_config("tiny"), steps), tmp_path / "run")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pretrain(plan)
    finally:
        torch.set_num_threads(threads)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    tokens_per_step = PRESETS["tiny"]["train"]["batch_size"] * 64
    for row in (r for r in rows if r["kind"] == "train"):
        assert tokens_per_step / row["tokens_per_s"] >= 0.25, row  # the read-back's wait is inside the step's time


def test_an_idle_accelerator_gets_the_batch_that_fills_it():
    from transformers import LlamaConfig

    small = load_config("small").config.model
    config = LlamaConfig(vocab_size=8000, **small.model_dump())
    parameters = 10_000_000
    need = memory.estimate(config, parameters, parameters, 4, 256)
    gpu, free = torch.device("cuda", 0), 139 * memory.GB
    advice = memory.batch_advice(need, gpu, free)
    assert advice is not None and "--batch-size 64 " in advice  # 64 × 256 tokens: what kept the H200 92 % busy
    assert f"of the {free / memory.GB:.0f} GB free on cuda" in advice
    assert memory.batch_advice(need, torch.device("cpu"), free) is None  # CPU cores are busy at any batch
    assert memory.batch_advice(memory.estimate(config, parameters, parameters, 64, 256), gpu, free) is None
    tight = 6 * need.total  # now memory, not the token target, limits the batch
    suggested = int(re.search(r"--batch-size (\d+) ", memory.batch_advice(need, gpu, tight)).group(1))
    fits = [memory.estimate(config, parameters, parameters, b, 256).total <= memory.FILL * tight
            for b in (suggested, 2 * suggested)]  # fmt: skip
    assert 8 <= suggested < 64 and fits == [True, False]


def test_the_benchmarks_plain_loop_trains_on_fmstacks_device(blocks, monkeypatch):
    from accelerate import PartialState

    bench = load_benchmark()
    moved = []
    to = torch.nn.Module.to

    def record(self, *args, **kwargs):
        moved.extend(a for a in args if isinstance(a, torch.device))
        return to(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "to", record)
    args = type("Args", (), {"preset": "tiny", "blocks": str(blocks), "steps": 3})()
    result = bench.worker_plain(args)
    assert moved == [PartialState().device] and result["tokens_per_s"] > 0
