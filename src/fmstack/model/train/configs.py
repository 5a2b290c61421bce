"""Training configurations: each trainer's run as one object, in a module light enough for the CLI to derive its
flags from (no torch here).

Pretraining: the model (a `LlamaConfig`'s fields) and the training run, as presets or a file.

```yaml
model: {hidden_size: 256, num_hidden_layers: 4, num_attention_heads: 4, max_position_embeddings: 512}
train: {steps: 2000, batch_size: 16, lr: 1.0e-3, warmup: 100}
```

A field a file leaves out takes the `small` preset's value, so a file says only how it differs from the
reference run. Unknown fields are errors (with the file, line and field): a misspelt `learning_rate` must not
silently train with the default.

Fine-tuning, DPO and classification: plain dataclasses, one field per `fmstack train` flag.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fmstack.core.errors import FmstackError
from fmstack.core.yamlfile import line_of, read_yaml, validate


class ConfigError(FmstackError):
    """A pretraining config (file, preset or flag) the user must fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSpec(_Strict):
    """The `LlamaConfig` fields a user sets; vocab_size and the special token ids come from the packed data."""

    hidden_size: int = Field(320, ge=8)
    intermediate_size: int = Field(864, ge=8)
    num_hidden_layers: int = Field(6, ge=1)
    num_attention_heads: int = Field(5, ge=1)
    num_key_value_heads: int = Field(5, ge=1, description="fewer than the heads: grouped-query attention")
    max_position_embeddings: int = Field(512, ge=8, description="the context; packed blocks must fit in it")
    rms_norm_eps: float = Field(1e-5, gt=0)
    rope_theta: float = Field(10000.0, gt=0)
    tie_word_embeddings: bool = True
    initializer_range: float = Field(0.02, gt=0)
    hidden_act: Literal["silu", "gelu", "relu"] = "silu"
    attention_dropout: float = Field(0.0, ge=0, lt=1)


class TrainSpec(_Strict):
    """The optimisation. `batch_size` is per process and per micro-step: a step sees batch_size × grad_accum ×
    processes blocks."""

    steps: int = Field(1500, ge=1)
    batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(3e-3, gt=0, le=1)
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="the cosine decays to lr × this")
    warmup: int = Field(100, ge=0, description="steps of linear warmup from 0 to lr")
    weight_decay: float = Field(0.1, ge=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.95, ge=0, lt=1)
    grad_clip: float = Field(1.0, gt=0, description="maximum global gradient norm")
    val_fraction: float = Field(0.05, gt=0, le=0.5, description="the last blocks held out for validation")
    eval_every: int = Field(250, ge=1)
    eval_blocks: int = Field(64, ge=1, description="at most this many validation blocks per evaluation")
    checkpoint_every: int = Field(250, ge=0, description="0: no checkpoints")
    keep_checkpoints: int = Field(2, ge=1)
    seed: int = Field(1337, ge=0)


# Fields that change the weights a run produces: a checkpoint resumes only under the same values.
RUN_FIELDS = ("steps", "batch_size", "grad_accum", "lr", "min_lr_ratio", "warmup", "weight_decay", "beta1", "beta2",
              "grad_clip", "val_fraction", "seed")  # fmt: skip


class PretrainConfig(_Strict):
    model: ModelSpec = ModelSpec()
    train: TrainSpec = TrainSpec()


PRESETS: dict[str, dict[str, Any]] = {
    # ~0.4M parameters with a 4k vocabulary: trains in seconds, for tests and trying things out.
    "tiny": {
        "model": {
            "hidden_size": 64,
            "intermediate_size": 176,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 256,
        },
        "train": {"steps": 50, "batch_size": 8, "lr": 3e-3, "warmup": 5, "eval_every": 25, "checkpoint_every": 25},
    },
    # ~10M parameters with an 8k vocabulary: the README's reference run on the packaged Wikipedia articles
    # (1.5M tokens, about 2 epochs of them: 15 minutes on 2 cores).
    "small": {},
}


@dataclass
class LoadedConfig:
    """A validated config and where it came from, so later checks (against the data) can point at its lines."""

    config: PretrainConfig
    origin: str  # "preset 'tiny'" or the file's path
    root: yaml.Node | None = None
    flags: set[str] = field(default_factory=set)  # training fields given on the command line

    def where(self, *loc: str) -> str:
        """`file:line: model.field`, `preset 'small': model.field` or `--flag` for an error message."""
        if loc[-1] in self.flags:
            return "--" + loc[-1].replace("_", "-")
        name = ".".join(loc)
        if self.root is None:
            return f"{self.origin}: {name}"
        return f"{self.origin}:{line_of(self.root, loc)}: {name}"


def load_config(name: str) -> LoadedConfig:
    """A preset name (tiny, small) or a YAML/JSON file path."""
    if name in PRESETS:
        return LoadedConfig(PretrainConfig.model_validate(PRESETS[name]), f"preset '{name}'")
    path = Path(name)
    if not path.is_file():
        raise ConfigError(f"--config {name}: not a preset ({', '.join(PRESETS)}) and no such file.")
    data, root = read_yaml(path, "pretraining config", ConfigError)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: a pretraining config is a mapping with 'model' and 'train' sections.")
    return LoadedConfig(validate(PretrainConfig, data, path, root, ConfigError), str(path), root)


def check_config(loaded: LoadedConfig) -> None:
    """What one field cannot say alone: shapes transformers would reject with a traceback, a warmup longer than
    the run."""
    m, t = loaded.config.model, loaded.config.train
    if m.hidden_size % m.num_attention_heads:
        raise ConfigError(
            f"{loaded.where('model', 'hidden_size')}: {m.hidden_size} is not divisible by num_attention_heads "
            f"({m.num_attention_heads}); each head gets hidden_size / heads dimensions."
        )
    if m.num_attention_heads % m.num_key_value_heads:
        raise ConfigError(
            f"{loaded.where('model', 'num_key_value_heads')}: {m.num_key_value_heads} does not divide "
            f"num_attention_heads ({m.num_attention_heads})."
        )
    if t.warmup >= t.steps:
        raise ConfigError(
            f"{loaded.where('train', 'warmup')}: {t.warmup} warmup steps leave nothing of a {t.steps}-step run; "
            "use fewer warmup steps (--warmup, a few percent of the steps) or more --steps."
        )


def with_overrides(loaded: LoadedConfig, overrides: dict[str, Any]) -> LoadedConfig:
    """The config with command-line values for training fields (None = not given), validated like the file."""
    given = {k: v for k, v in overrides.items() if v is not None}
    if not given:
        return loaded
    try:
        train = TrainSpec.model_validate(loaded.config.train.model_dump() | given)
    except ValidationError as exc:
        first = exc.errors()[0]
        flag = "--" + str(first["loc"][0]).replace("_", "-")
        raise ConfigError(f"{flag}: {first['msg']} (got {first.get('input')!r}).") from None
    config = loaded.config.model_copy(update={"train": train})
    return LoadedConfig(config, loaded.origin, loaded.root, set(given))


def fingerprint(config: PretrainConfig) -> dict[str, Any]:
    """What a checkpoint must share with the run that resumes it (JSON-ready, compared field by field)."""
    train = config.train.model_dump()
    return {"model": config.model.model_dump(), "train": {k: train[k] for k in RUN_FIELDS}}


def differences(saved: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[str]:
    """`model.hidden_size: 64 in the checkpoint, 128 now` for each field that differs."""
    out = []
    for key in sorted(set(saved) | set(now)):
        a, b = saved.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {json.dumps(a)} in the checkpoint, {json.dumps(b)} now")
    return out


@dataclass(frozen=True)
class FinetuneConfig:
    """One fine-tuning run (`fmstack train finetune` derives its flags from these fields)."""

    model: str
    data: Path
    out: Path
    method: str = "lora"
    eval_data: Path | None = None
    eval_split: float = 0.1
    epochs: int = 1
    steps: int | None = None
    lr: float | None = None
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int | None = None
    truncate: bool = False
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    merge: bool = False
    name: str | None = None
    seed: int = 0


DPO_DEFAULT_LR = {True: 5e-5, False: 5e-7}  # LoRA adapters move from zero; full DPO nudges every weight


@dataclass(frozen=True)
class DpoConfig:
    """One DPO run (`fmstack train dpo` derives its flags from these fields)."""

    model: str
    data: Path
    out: Path
    eval_data: Path | None = None
    beta: float = 0.1
    lora: bool = True
    epochs: float = 1.0
    steps: int | None = None
    lr: float | None = None
    batch_size: int = 2
    grad_accum: int = 1
    max_length: int = 1024
    lora_r: int = 8
    lora_alpha: int = 16
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    name: str | None = None
    seed: int = 0

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DPO_DEFAULT_LR[self.lora]


@dataclass(frozen=True)
class ClassifyConfig:
    """One classifier training run (`fmstack train classify` derives its flags from these fields)."""

    text_field: str = "text"
    label_field: str = "label"
    epochs: float = 3.0
    eval_split: float = 0.2
    lr: float = 5e-5
    batch_size: int = 16
    max_length: int = 128
    seed: int = 0


@dataclass(frozen=True)
class DistillConfig:
    """One distillation run (`fmstack train distill` derives its flags from these fields): the teacher answers the
    prompts, then the student is fine-tuned on those answers (`sequence`), or also on the teacher's next-token
    distributions (`logit`, when both share a tokenizer)."""

    teacher: str
    student: str
    prompts: Path
    out: Path
    level: str = "sequence"
    answers: str = "teacher"
    max_tokens: int = 256
    temperature: float = 0.0
    concurrency: int = 8
    keep_truncated: bool = False
    kd_temperature: float = 2.0
    top_k: int = 20
    alpha: float = 0.5
    method: str = "lora"
    eval_split: float = 0.1
    epochs: int = 1
    steps: int | None = None
    lr: float | None = None
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int | None = None
    lora_r: int = 8
    lora_alpha: int = 16
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    name: str | None = None
    seed: int = 0
