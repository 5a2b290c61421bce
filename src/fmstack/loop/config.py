"""The loop's settings (`fmstack loop run APP --config loop.yaml`): one YAML file, every field optional.

```yaml
base: smollm2-135m-instruct     # the model fine-tuned (--base wins)
data: {window: since-last-loop, formats: [sft], min_records: 8, holdout: 0.3}
finetune: {steps: 30, lr: 2.0e-4, batch_size: 4, lora_r: 8, max_length: 512}
dpo: {steps: 20, beta: 0.1}
gate: {metric: token_f1, min_delta: 0.0, min_cases: 3, max_tokens: 128}
export: {quant: q8_0}
ab: {share: 10}
```

Unknown fields are errors naming the file, the line and the field: a misspelt `min_delta` must not silently gate
with the default. Errors that need the registry (an unknown base, a metric that does not exist) name the field too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from fmstack.core.errors import FmstackError
from fmstack.core.yamlfile import line_of, read_yaml, validate


class LoopConfigError(FmstackError):
    """A loop config (file or flag) the user must fix: exit code 2."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSpec(_Strict):
    """Which traces become training data, and which reviewed answers are kept out of training for the gate."""

    window: Literal["since-last-loop", "all"] = "since-last-loop"
    formats: list[Literal["sft", "dpo"]] = Field(default_factory=lambda: ["sft"], min_length=1)
    min_rating: int = Field(1, ge=1, description="net thumbs an answer needs to be an SFT target")
    min_records: int = Field(8, ge=1, description="fewer training records: the loop stops, nothing worth training")
    holdout: float = Field(0.3, ge=0, lt=1, description="share of reviewed answers held out of training for the gate")
    seed: int = 0


class FinetuneSpec(_Strict):
    """LoRA SFT of the base model (`fmstack train finetune`); the merged weights are what is exported."""

    steps: int | None = Field(None, ge=1, description="optimizer steps (default: one epoch)")
    epochs: int = Field(1, ge=1)
    lr: float | None = Field(None, gt=0, le=1)
    batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_length: int | None = Field(512, ge=8)
    lora_r: int = Field(8, ge=1)
    lora_alpha: int = Field(16, ge=1)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"], min_length=1)
    seed: int = 0


class DpoSpec(_Strict):
    """DPO on the preference pairs (`fmstack train dpo`), after SFT when both formats are asked for."""

    steps: int | None = Field(None, ge=1)
    epochs: float = Field(1.0, gt=0)
    beta: float = Field(0.1, gt=0)
    lr: float | None = Field(None, gt=0, le=1)
    batch_size: int = Field(2, ge=1)
    max_length: int = Field(512, ge=8)
    lora_r: int = Field(8, ge=1)
    lora_alpha: int = Field(16, ge=1)
    seed: int = 0


class GateSpec(_Strict):
    """The candidate against the production variant on the suite from reviews: its mean `metric` must beat
    production's by at least `min_delta`, and no metric may be significantly worse (paired bootstrap 95 % CI)."""

    metric: str = "token_f1"
    metrics: list[str] | None = Field(None, description="the suite's metrics (default: what from-reviews writes)")
    min_delta: float = Field(0.0, ge=-1, le=1)
    min_cases: int = Field(3, ge=1, description="fewer held-out reviewed answers: the loop stops before training")
    max_cases: int = Field(200, ge=1)
    max_tokens: int = Field(128, ge=1)
    concurrency: int = Field(2, ge=1)


class ExportSpec(_Strict):
    quant: Literal["f32", "f16", "q8_0", "q4_k_m"] = "q8_0"


class AbSpec(_Strict):
    """The A/B route the candidate joins: `route` (default: the production model's own name, so its clients change
    nothing) at `share` percent, taken from the other variants in proportion to their weights."""

    route: str | None = None
    share: int = Field(10, ge=1, le=50)


class LoopConfig(_Strict):
    base: str | None = None
    candidate: str | None = Field(None, description="registry name of the candidate (default: APP-loop-N)")
    data: DataSpec = DataSpec()
    finetune: FinetuneSpec = FinetuneSpec()
    dpo: DpoSpec = DpoSpec()
    gate: GateSpec = GateSpec()
    export: ExportSpec = ExportSpec()
    ab: AbSpec = AbSpec()


class LoadedLoopConfig:
    """A validated config and where each field came from, so later checks can point at its line."""

    def __init__(self, config: LoopConfig, path: Path | None = None, root: yaml.Node | None = None):
        self.config = config
        self.path = path
        self.root = root

    def where(self, *loc: str | int) -> str:
        """`loop.yaml:7: gate.metric`, or `gate.metric` for a default (no file)."""
        name = ".".join(map(str, loc))
        if self.path is None:
            return name
        return f"{self.path}:{line_of(self.root, loc)}: {name}"


def load_loop_config(path: Path | None) -> LoadedLoopConfig:
    """The defaults, or a YAML file validated against them (errors: file:line: field)."""
    if path is None:
        return LoadedLoopConfig(LoopConfig())
    if not path.is_file():
        raise LoopConfigError(f"--config {path}: no such file; give a loop YAML file (see `fmstack loop run --help`).")
    data, root = read_yaml(path, "loop config", LoopConfigError)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise LoopConfigError(f"{path}:1: a loop config is a mapping (base, data, finetune, gate, export, ab).")
    return LoadedLoopConfig(validate(LoopConfig, data, path, root, LoopConfigError), path, root)
