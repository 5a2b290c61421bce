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
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from fmstack.core.errors import InvalidRequest

GB = 1024**3


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
