"""The record every step passes along, the record of what was rejected, and the counters every step keeps."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Document:
    """One text document. `source` and `line` say where it came from, so every rejection and duplicate can be
    traced back to the file and line a user can open."""

    id: str
    text: str
    source: str = ""
    line: int = 0
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Rejected:
    """Input that could not be read (broken JSON, wrong encoding, unreadable image): reported, never fatal
    unless the run is strict."""

    source: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.reason}" if self.line else f"{self.source}: {self.reason}"


@dataclass
class StepStats:
    """What one step did, by rule: documents dropped, documents changed (kept but edited). Stats of shards are
    added together, so a run's totals are the same whether it ran on one core, many, or Ray."""

    seen: int = 0
    kept: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    changed: Counter[str] = field(default_factory=Counter)

    def __add__(self, other: StepStats) -> StepStats:
        return StepStats(
            self.seen + other.seen, self.kept + other.kept, self.dropped + other.dropped, self.changed + other.changed
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "seen": self.seen,
            "kept": self.kept,
            "dropped": dict(sorted(self.dropped.items())),
            "changed": dict(sorted(self.changed.items())),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StepStats:
        return cls(d["seen"], d["kept"], Counter(d["dropped"]), Counter(d["changed"]))
