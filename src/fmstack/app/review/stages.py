"""Moving an app between stages, one at a time: forward only when the stage's numbers meet its bars (or with
`force`, recorded as such), back at any time; and the report that shows the numbers beside the bars."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from fmstack.app.review.policy import STAGES, Policy, check_stage, get_policy, record_move
from fmstack.app.review.stats import StageStats, bar_checks, stage_stats
from fmstack.core.errors import InvalidRequest


@dataclass
class PolicyReport:
    """An app's policy, each stage's review numbers, and the bars for leaving each stage checked against them."""

    policy: Policy
    stages: dict[str, StageStats]
    bars: dict[str, list[dict[str, Any]]]

    @property
    def ready(self) -> bool | None:
        """Whether the current stage's numbers meet its bars (None in run: there is no next stage)."""
        checks = self.bars.get(self.policy.stage)
        return None if checks is None else all(c["met"] for c in checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy.to_dict(),
            "ready": self.ready,
            "stages": [
                self.stages[s].to_dict() | {"bars": self.bars.get(s), "current": s == self.policy.stage} for s in STAGES
            ],
        }


def policy_report(session: Session, app: str) -> PolicyReport:
    policy = get_policy(session, app)
    stats = stage_stats(session, policy)
    bars = {stage: bar_checks(stats[stage], policy.bars.get(stage, {})) for stage in STAGES[:-1]}
    return PolicyReport(policy, stats, bars)


def move(session: Session, app: str, stage: str, by: str | None = None, force: bool = False) -> PolicyReport:
    """Move the app to `stage` and record it with the numbers of the stage it leaves."""
    report = policy_report(session, app)
    current = report.policy.stage
    forward = STAGES.index(check_stage(stage)) - STAGES.index(current)
    if forward == 0:
        raise InvalidRequest(f"'{app}' is already in {stage}.", param="stage")
    if forward > 1:
        after = STAGES[STAGES.index(current) + 1]
        raise InvalidRequest(f"stage: '{app}' is in {current}; move one stage at a time (to {after}).", param="stage")
    if stage == "run" and not report.policy.judge:
        raise InvalidRequest(
            f"judge_model: run lets an AI judge decide which answers a person sees; give '{app}' a judge first "
            f"(fmstack review policy {app} --judge MODEL, or fmstack train judge {app}).",
            param="judge_model",
        )
    met = report.ready if forward > 0 else None
    if forward > 0 and not met and not force:
        missing = [c for c in report.bars[current] if not c["met"]]
        raise InvalidRequest(
            f"stage: '{app}' does not meet the bars for leaving {current}: {_describe(missing)}. "
            "Review more, or move anyway with --force (recorded as forced).",
            param="stage",
        )
    numbers = report.stages[current].to_dict()
    record_move(session, app, stage, numbers, met, by, forced=forward > 0 and not met)
    return policy_report(session, app)


def _describe(checks: list[dict[str, Any]]) -> str:
    def value(v: float | None) -> str:
        return "not measured" if v is None else f"{v:.3g}"

    return "; ".join(f"{c['bar']} {c['required']:g} (now {value(c['value'])})" for c in checks)
