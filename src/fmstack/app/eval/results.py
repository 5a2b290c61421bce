"""A run's results as plain data: what reports, comparisons and the terminal table are computed from.

The runner builds these and the store keeps them; report/compare/stats only ever see `RunData`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass
class MetricScore:
    value: float | None
    passed: bool | None = None
    reason: str | None = None
    error: str | None = None


@dataclass
class ResultRow:
    """One case answered by one model through one prompt, with every metric's score."""

    case_id: str
    model: str
    prompt: str | None  # "name@version" when the suite runs prompt versions, else None
    input: Any  # the messages sent (or the case's variables)
    reference: Any
    output: str | None
    error: str | None  # the model failed on this case: recorded, the run went on
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    cached: bool = False
    scores: dict[str, MetricScore] = field(default_factory=dict)  # by metric label

    @property
    def variant(self) -> str:
        """The model (and prompt) this row belongs to, as shown in tables and plots."""
        return f"{self.model} · {self.prompt}" if self.prompt else self.model


@dataclass
class MetricInfo:
    label: str
    name: str
    higher_is_better: bool = True
    threshold: float | None = None
    judge: str | None = None  # the judge model, for AI-as-judge metrics
    judge_agreement: dict | None = None  # {"kappa", "accuracy", "n", "calibrated_at"}; None = never calibrated


@dataclass
class RunData:
    id: str
    suite: str
    created_at: str
    metrics: list[MetricInfo]
    rows: list[ResultRow]
    config: dict = field(default_factory=dict)

    @property
    def variants(self) -> list[str]:
        return list(dict.fromkeys(r.variant for r in self.rows))

    def metric(self, label: str) -> MetricInfo:
        return next(m for m in self.metrics if m.label == label)


@dataclass
class RunSummary:
    """A stored run as `fmstack eval list` shows it: what ran, when, and how many results it stored."""

    id: str
    created_at: datetime
    suite: str
    models: list[str]
    prompts: list[str]  # the stored prompt versions it ran ("name@2"), if any
    results: int
    status: str
