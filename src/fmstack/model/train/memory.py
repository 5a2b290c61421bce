"""Will a training run fit in memory? An estimate before the first step, and a clear error when it does not.

Running out of memory hours into a run — or the kernel's OOM killer ending it without a word — is what "validate
first, then train" is about. Before the first step, `check_fits` estimates the run's peak memory and refuses a run
that cannot fit in what its device has free, saying what to change:

- weights: 4 bytes per parameter (training is in float32 here);
- gradients and AdamW's two moments: 12 bytes per trainable parameter (LoRA trains few);
- activations kept for the backward pass, per decoder layer: 68·h bytes per token (Korthikanti et al. 2022,
  "Reducing Activation Recomputation in Large Transformer Models": 34·s·b·h bytes at 16 bits, doubled for
  float32) plus 10·heads·s bytes per token for the attention scores (their 5·a·s²·b, doubled); and the logits
  with their softmax and gradient, 12 bytes per token and vocabulary entry.

It is an estimate (kernels allocate workspace, allocators cache), measured against real steps in the tests. A run
it lets through can still fail, so `out_of_memory` turns the allocator's error during training into one that says
at which step and what to change, instead of a traceback.

The same estimate says when a run is far too small for its accelerator: the `small` preset's batch of 4 × 256
tokens kept an H200 19 % busy (92 % at a batch of 64, with no other change). `batch_advice` then names the batch
that would keep it busy — as many sequences as fit in most of its free memory, up to `BUSY_TOKENS` a micro-batch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from fmstack.core.errors import InvalidRequest

GB = 1024**3
BUSY_TOKENS = 16_384  # tokens per micro-batch that kept an H200 92 % busy (the small preset at 64 × 256)
UNDERUSED = 0.25  # a run whose estimate is under this share of the accelerator's free memory underuses it
FILL = 0.8  # share of the free memory a suggested batch may take (estimates are within 3-8 %; allocators cache)


@dataclass(frozen=True)
class Estimate:
    """Peak bytes of one training process, by what holds them."""

    weights: int
    optimizer: int
    activations: int
    batch: int  # sequences per micro-batch, as the activations were computed
    length: int  # tokens per sequence

    @property
    def total(self) -> int:
        return self.weights + self.optimizer + self.activations

    def describe(self) -> str:
        return (
            f"about {self.total / GB:.1f} GB ({self.weights / GB:.1f} GB of weights, {self.optimizer / GB:.1f} GB "
            f"of gradients and optimizer state, {self.activations / GB:.1f} GB of activations for a batch of "
            f"{self.batch} × {self.length} tokens)"
        )


def estimate(config: Any, parameters: int, trainable: int, batch: int, length: int) -> Estimate:
    """`config` is the model's transformers config (hidden_size, num_hidden_layers, num_attention_heads,
    vocab_size); `parameters` every weight held (a frozen reference model included), `trainable` those trained."""
    tokens = batch * length
    per_layer = tokens * (68 * config.hidden_size + 10 * config.num_attention_heads * length)
    activations = config.num_hidden_layers * per_layer + 12 * tokens * config.vocab_size
    return Estimate(4 * parameters, 12 * trainable, activations, batch, length)


def available_bytes(device: torch.device) -> int:
    """Free memory of the device: the GPU's free memory, or the RAM the kernel can give without swapping."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free
    import psutil

    return psutil.virtual_memory().available


def check_fits(need: Estimate, device: torch.device, advice: str, free: int | None = None) -> None:
    """Raise InvalidRequest, before training, when the run cannot fit in `free` bytes (default: what the device
    has free now; measure before loading the model, which the estimate counts). Processes started on one machine
    by `accelerate launch` on CPUs share its RAM, so each counts for all of them there."""
    sharing = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if device.type == "cpu" else 1
    free = available_bytes(device) if free is None else free
    if need.total * sharing > free:
        processes = f" for each of {sharing} processes" if sharing > 1 else ""
        raise InvalidRequest(
            f"This run needs {need.describe()}{processes}, but {device.type} has {free / GB:.1f} GB free. {advice}"
        )


def batch_advice(need: Estimate, device: torch.device, free: int) -> str | None:
    """On an accelerator that a run leaves mostly idle, the batch size that would keep it busy, as one sentence;
    None on a CPU (its cores are busy whatever the batch) or when the batch is large enough already."""
    if device.type == "cpu" or need.total >= UNDERUSED * free or need.batch * need.length >= BUSY_TOKENS:
        return None
    per_sequence = need.activations / need.batch
    fits = int((FILL * free - need.weights - need.optimizer) // per_sequence)
    suggested = 2 ** int(math.log2(max(1, min(fits, BUSY_TOKENS // need.length))))
    if suggested < 2 * need.batch:
        return None
    total = need.weights + need.optimizer + suggested * per_sequence
    return (
        f"A batch of {need.batch} × {need.length} tokens needs about {need.total / GB:.1f} GB of the "
        f"{free / GB:.0f} GB free on {device.type}, so the accelerator will mostly wait. --batch-size {suggested} "
        f"(about {total / GB:.1f} GB) would keep it busy; a step then sees {suggested // need.batch}× the tokens "
        "(divide --grad-accum by as much where you can, or retune --lr)."
    )


@contextmanager
def out_of_memory(advice: str, where: Callable[[], str]) -> Iterator[None]:
    """The allocator's error during training, as a message that says where it happened and what to change."""
    try:
        yield
    except (RuntimeError, MemoryError) as exc:  # torch.OutOfMemoryError is a RuntimeError; so is the CPU allocator's
        if not _is_out_of_memory(exc):
            raise
        raise InvalidRequest(f"Ran out of memory {where()}. {advice}") from exc


def _is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError | MemoryError) or "can't allocate memory" in str(exc)


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(all, trainable), counting tied weights once."""
    unique = {id(p): p for p in model.parameters()}.values()
    return sum(p.numel() for p in unique), sum(p.numel() for p in unique if p.requires_grad)
