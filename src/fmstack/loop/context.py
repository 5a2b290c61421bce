"""What every step of a loop run reads (the run, its config, the store) and the two ways a step ends early."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import sessionmaker

from fmstack.core.config import Settings
from fmstack.loop.config import LoopConfig
from fmstack.loop.runs import LoopRuns, RunInfo

# (step, message): one line of what the loop did, for the terminal or a log.
Report = Callable[[str, str], None]


class LoopStopped(Exception):
    """A step decided the loop should not go on (too little data, a failed gate): not an error, an outcome. The
    run ends with `status` and `reason`; `details` (the gate's scores) goes to the store and to `--json`."""

    def __init__(self, status: str, reason: str, details: dict[str, Any] | None = None):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.details = details or {}


@dataclass
class StepResult:
    """What a step produced (stored, and read back by later steps and by a resumed run) and one line saying so."""

    output: dict[str, Any]
    summary: str


@dataclass
class LoopContext:
    app: str
    base: str
    candidate: str
    config: LoopConfig
    settings: Settings
    sessions: sessionmaker
    runs: LoopRuns
    run: RunInfo
    report: Report
    outputs: dict[str, dict[str, Any]]  # step -> its StepResult.output, for the steps that finished

    @property
    def workdir(self) -> Path:
        return Path(self.run.workdir)

    @property
    def route(self) -> str:
        """The A/B route the candidate joins: by default the base model's own name, so clients change nothing."""
        return self.config.ab.route or self.base
