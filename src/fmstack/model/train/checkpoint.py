"""Training checkpoints that survive `kill -9`: `RUN/checkpoints/step-000100/`, written whole or not at all.

accelerate's `save_state` writes the model, optimizer, registered objects (the LR scheduler) and every process's
RNG states into a temporary folder; `state.json` (step, config, where the metrics log ended) goes in last; then
one rename publishes it. A folder named `step-*` is therefore always complete, and resuming takes the newest.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from accelerate import Accelerator

PREFIX = "step-"


def checkpoint_dir(run: Path) -> Path:
    return run / "checkpoints"


def latest_checkpoint(run: Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    found = sorted(p for p in checkpoint_dir(run).glob(f"{PREFIX}*") if (p / "state.json").is_file())
    return found[-1] if found else None


def read_state(checkpoint: Path) -> dict[str, Any]:
    return json.loads((checkpoint / "state.json").read_text(encoding="utf-8"))


def save_checkpoint(accelerator: Accelerator, run: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Save on every process (each writes its own RNG state), publish on the main one, keep the newest `keep`."""
    final = checkpoint_dir(run) / f"{PREFIX}{step:06d}"
    tmp = final.with_name(f".{final.name}.tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _write_json(tmp / "state.json", {"step": step, **state})
        shutil.rmtree(final, ignore_errors=True)  # a stale one from a run that was resumed from an earlier step
        os.replace(tmp, final)
        for old in sorted(checkpoint_dir(run).glob(f"{PREFIX}*"))[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Accelerator, checkpoint: Path) -> dict[str, Any]:
    """Restore model, optimizer, scheduler and RNG states in place; returns the checkpoint's state.json."""
    accelerator.load_state(str(checkpoint))
    return read_state(checkpoint)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
