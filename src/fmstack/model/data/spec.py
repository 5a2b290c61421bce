"""A data pipeline as a YAML file: inputs, output, and the steps clean → dedup → tokenize (each optional).

```yaml
input: {paths: [raw/], text_field: text, id_field: id}
output: {path: out/, format: parquet}       # or jsonl
clean: {languages: [en], pii: true}           # see fmstack.model.data.clean.CleanConfig for every rule
dedup: {threshold: 0.8, ngram: 5, num_perm: 128}
tokenize: {tokenizer: smollm2-135m-instruct, pack: {block_size: 512}}
engine: local                                 # or ray (ray_address: for a cluster)
```

The order is fixed, as in datatrove's examples: duplicates are found on cleaned text (boilerplate removed), and
only what survives is tokenized.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fmstack.core.errors import FmstackError
from fmstack.core.yamlfile import line_of, read_yaml, validate


class PipelineError(FmstackError):
    """A pipeline file or option the user must fix."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputSpec(_Spec):
    paths: list[str] = Field(min_length=1)
    text_field: str = "text"
    id_field: str | None = None
    shard_mb: float = Field(4, gt=0, description="JSONL is read in pieces of about this size, one per worker task")


class OutputSpec(_Spec):
    path: str
    format: Literal["parquet", "jsonl"] = "parquet"
    data: bool = Field(True, description="write the documents (false: only the manifest and report, for stats)")


class DedupSpec(_Spec):
    exact: bool = True
    near: bool = True
    ngram: int = Field(5, ge=1, le=64, description="words per shingle")
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations")
    threshold: float = Field(0.8, gt=0, le=1, description="Jaccard similarity above which documents are duplicates")
    seed: int = 1


class TrainSpec(_Spec):
    vocab_size: int = Field(8000, ge=300)
    min_frequency: int = Field(2, ge=1)


class PackSpec(_Spec):
    block_size: int = Field(ge=8)
    format: Literal["npy", "parquet"] = "npy"


class TokenizeSpec(_Spec):
    tokenizer: str | None = Field(None, description="registry model, tokenizer dir/file, GGUF, or hub name")
    train: TrainSpec | None = Field(None, description="train a byte-level BPE on the output instead")
    pack: PackSpec | None = None


class PipelineSpec(_Spec):
    input: InputSpec
    output: OutputSpec
    clean: dict[str, Any] | None = None
    dedup: DedupSpec | None = None
    tokenize: TokenizeSpec | None = None
    engine: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    workers: int | None = Field(None, ge=1)
    strict: bool = False

    def fingerprint(self) -> str:
        """What a resumed run must share with the run it continues: everything but how it runs and where its
        output goes (so that two runs into two folders can be compared byte for byte)."""
        body = self.model_dump(exclude={"engine", "ray_address", "workers"}, mode="json")
        body["output"].pop("path")
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def load_pipeline(path: Path) -> PipelineSpec:
    """A pipeline file, validated; relative paths in it are relative to the file, as a user reading it expects."""
    data, root = read_yaml(path, "pipeline", PipelineError)
    if not isinstance(data, dict):
        raise PipelineError(f"{path}:1: a pipeline is a mapping with 'input', 'output' and its steps.")
    spec = validate(PipelineSpec, data, path, root, PipelineError)
    base = path.parent
    spec.input.paths = [str(base / p) for p in spec.input.paths]
    spec.output.path = str(base / spec.output.path)
    if spec.tokenize and spec.tokenize.tokenizer and (base / spec.tokenize.tokenizer).exists():
        spec.tokenize.tokenizer = str(base / spec.tokenize.tokenizer)
    if spec.clean is not None:
        _check_clean(spec.clean, path, root)
    _check_tokenize(spec, str(path))
    return spec


def _check_clean(config: dict[str, Any], path: Path, root: Any) -> None:
    """The cleaning rules, checked key by key so that the error points at the line of the wrong one."""
    from fmstack.model.data.clean import CleanConfig

    for key, value in config.items():
        try:
            CleanConfig.from_dict({key: value})
        except FmstackError as exc:
            raise PipelineError(
                f"{path}:{line_of(root, ('clean', key))}: clean.{key}: {exc.message.removeprefix('clean: ')}"
            ) from None
    try:
        CleanConfig.from_dict(config)
    except FmstackError as exc:
        raise PipelineError(f"{path}:{line_of(root, ('clean',))}: clean: {exc.message}") from None


def _check_tokenize(spec: PipelineSpec, where: str) -> None:
    t = spec.tokenize
    if t is not None and (t.tokenizer is None) == (t.train is None):
        raise PipelineError(f"{where}: tokenize: give either 'tokenizer' (an existing one) or 'train' (a new BPE).")
