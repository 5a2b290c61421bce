"""What a metric sees (a case and a model's output) and what it returns (a score), and the registry of metrics.

A metric is a pydantic model: its fields are the parameters a suite may set (`threshold`, `pattern`, `rubric`…),
so a suite with a wrong parameter is rejected with the field's name before anything runs. Users add their own
metrics in Python with `@register("name")`, or by naming `module:Class` in a suite.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict


@dataclass
class Case:
    """One test case of a suite."""

    id: str
    messages: list[dict] | None = None  # the chat input (after rendering a prompt template, if any)
    vars: dict[str, Any] = field(default_factory=dict)  # template variables, shown in reports
    reference: str | list[str] | None = None  # one or several acceptable answers
    context: list[str] | None = None  # retrieved passages, for RAG metrics
    tests: str | None = None  # Python unit tests for functional correctness
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def references(self) -> list[str]:
        if self.reference is None:
            return []
        return [self.reference] if isinstance(self.reference, str) else list(self.reference)

    @property
    def question(self) -> str:
        """The last user message: what the answer should address."""
        for message in reversed(self.messages or []):
            if message.get("role") == "user":
                return str(message.get("content", ""))
        return ""


@dataclass
class Output:
    """A model's answer to a case; `samples` holds all k answers when a metric needs several (pass@k)."""

    text: str
    samples: list[str] = field(default_factory=list)
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0


@dataclass
class Score:
    """A metric's verdict. `value` is on the metric's own scale (0–1 for most, 1–5 for rubrics).

    `error` is set instead of a value when the metric could not decide (a judge that never answered in JSON):
    such a case is reported as an error, never silently scored.
    """

    value: float | None
    passed: bool | None = None
    reason: str | None = None
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


Judge = Callable[[list[dict]], str]


@dataclass
class MetricContext:
    """Models a metric may use: the embedding model and the judge model (each None when not configured)."""

    embed: Callable[[list[str]], np.ndarray] | None = None
    judge: Judge | None = None
    judge_name: str | None = None


class Metric(BaseModel):
    """Base of every metric. Subclasses set `name`, declare parameters as fields and implement `score`."""

    model_config = ConfigDict(extra="forbid")

    name: ClassVar[str] = ""
    requires: ClassVar[frozenset[str]] = frozenset()  # of: reference, context, tests, judge, embed
    higher_is_better: ClassVar[bool] = True
    threshold: float | None = None  # a case passes when its value reaches it
    label: str | None = None  # the column name, when a suite uses one metric twice (two `contains`, say)

    @property
    def samples(self) -> int:
        """How many answers per case this metric needs (pass@k asks for k)."""
        return 1

    def default_label(self) -> str:
        return self.name

    def score(self, case: Case, output: Output, ctx: MetricContext) -> Score:
        raise NotImplementedError

    def judge_pass(self, value: float | None) -> bool | None:
        if value is None or self.threshold is None:
            return None
        return value >= self.threshold if self.higher_is_better else value <= self.threshold


_REGISTRY: dict[str, type[Metric]] = {}


def register(name: str) -> Callable[[type[Metric]], type[Metric]]:
    """Class decorator: make a metric available to suites under `name`."""

    def decorate(cls: type[Metric]) -> type[Metric]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def metric_names() -> list[str]:
    return sorted(metric_classes())


def metric_classes() -> dict[str, type[Metric]]:
    return dict(_REGISTRY)


def get_metric(name: str, params: dict[str, Any] | None = None) -> Metric:
    """A configured metric by registry name, or by `module:Class` for a user's own. Raises KeyError if unknown,
    pydantic.ValidationError if its parameters are wrong."""
    if name in _REGISTRY:
        cls = _REGISTRY[name]
    elif ":" in name:
        module, _, attr = name.partition(":")
        cls = getattr(importlib.import_module(module), attr)
        if not (isinstance(cls, type) and issubclass(cls, Metric)):
            raise KeyError(f"{name} is not a fmstack Metric subclass")
        cls.name = cls.name or name
    else:
        raise KeyError(name)
    return cls(**(params or {}))
