"""Review policies: per app, its stage (crawl, walk, run) and the settings each stage reads, kept in the store so a
move is one command and every move is recorded with the numbers of the stage it left."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from fmstack.app.eval.metrics import get_metric
from fmstack.core.errors import InvalidRequest, ModelNotFound, NotFound
from fmstack.core.registry import Registry
from fmstack.core.store.schema import ReviewPolicy, ReviewStageMove, utcnow

STAGES = ("crawl", "walk", "run")
# Judge metrics that need nothing a production answer lacks (a reference answer, unit tests).
JUDGE_METRICS = ("rubric", "faithfulness")
# What must hold before an app leaves a stage: enough reviews, few rejections and edits, and (before the AI judge
# decides alone) a judge that agrees with the reviewers.
DEFAULT_BARS: dict[str, dict[str, float]] = {
    "crawl": {"min_reviewed": 30, "min_approval": 0.9, "max_edit_distance": 0.1},
    "walk": {"min_reviewed": 50, "min_approval": 0.95, "min_kappa": 0.6},
}
BARS = ("min_reviewed", "min_approval", "max_edit_distance", "min_kappa", "min_reviewer_kappa")


@dataclass(frozen=True)
class Policy:
    """An app's review policy as plain data (cached by the server, shown by the CLI and the page)."""

    app: str
    stage: str
    share: float
    double_share: float
    judge_model: str | None
    judge_metric: str
    judge_classifier: str | None
    judge_share: float
    threshold: float
    rubric: str | None
    hold_seconds: float
    bars: dict[str, dict[str, float]]
    updated_at: datetime

    @classmethod
    def of(cls, row: ReviewPolicy) -> Policy:
        return cls(**{name: getattr(row, name) for name in cls.__dataclass_fields__})

    @property
    def judge(self) -> str | None:
        """The judge this policy uses: the one trained on its reviews when it agrees best, else the generic one."""
        return f"classifier:{self.judge_classifier}" if self.judge_classifier else self.judge_model

    def next_stage(self) -> str | None:
        index = STAGES.index(self.stage)
        return STAGES[index + 1] if index + 1 < len(STAGES) else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"judge": self.judge, "next_stage": self.next_stage()}


class PolicySettings(BaseModel):
    """The settings a user may change; None leaves a setting as it is."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    share: float | None = Field(None, ge=0, le=1)
    double_share: float | None = Field(None, ge=0, le=1)
    judge_model: str | None = None
    judge_metric: str | None = None
    judge_share: float | None = Field(None, ge=0, le=1)
    threshold: float | None = Field(None, ge=0, le=1)
    rubric: str | None = None
    hold_seconds: float | None = Field(None, gt=0, le=86_400)
    bars: dict[str, dict[str, float]] | None = None


def settings_from(values: dict[str, Any]) -> PolicySettings:
    """Validated settings, or InvalidRequest naming the first bad field."""
    try:
        return PolicySettings.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise InvalidRequest(f"Invalid value for '{field}': {first['msg']}.", param=field) from None


def get_policy(session: Session, app: str) -> Policy:
    row = session.get(ReviewPolicy, app)
    if row is None:
        raise NotFound(f"No review policy for app '{app}'. Create one: fmstack review policy {app} --stage crawl.")
    return Policy.of(row)


def find_policy(session: Session, app: str | None) -> Policy | None:
    row = session.get(ReviewPolicy, app) if app else None
    return Policy.of(row) if row else None


def list_policies(session: Session) -> list[Policy]:
    return [Policy.of(row) for row in session.scalars(select(ReviewPolicy).order_by(ReviewPolicy.app))]


def save_policy(
    session: Session, registry: Registry, app: str, changes: PolicySettings, stage: str | None = None
) -> Policy:
    """Create the app's policy (in `stage`, crawl by default) or change its settings; every field is checked, and
    the first bad one named, before anything is written. A new policy's creation is its first recorded move."""
    if not app or len(app) > 200:
        raise InvalidRequest("app: name the app (its X-Fmstack-App header), in at most 200 characters.", param="app")
    values = changes.model_dump(exclude_none=True)
    _check(registry, values)
    row = session.get(ReviewPolicy, app)
    if row is not None and stage is not None and stage != row.stage:
        raise InvalidRequest(
            f"'{app}' is in {row.stage}: change its stage with `fmstack review move {app} {stage}` "
            "(POST /v1/reviews/policies/{app}/move), which checks the bars and records the move.",
            param="stage",
        )
    final_stage = row.stage if row is not None else check_stage(stage or "crawl")
    judge = values.get("judge_model", row and row.judge_model)
    if final_stage == "run" and not (judge or row and row.judge_classifier):
        raise InvalidRequest(f"judge_model: '{app}' in run needs a judge (--judge MODEL).", param="judge_model")
    if row is None:
        row = ReviewPolicy(app=app, stage=final_stage, bars=DEFAULT_BARS)
        session.add(row)
        session.add(ReviewStageMove(app=app, from_stage=None, to_stage=row.stage, numbers={}))
    if "bars" in values:  # per stage, the bars given replace those of the same name; the others stay
        values["bars"] = {s: (row.bars or {}).get(s, {}) | values["bars"].get(s, {}) for s in STAGES[:-1]}
    for name, value in values.items():
        setattr(row, name, value if value != "" else None)  # an empty judge model: no generic judge
    row.updated_at = utcnow()
    session.flush()
    return Policy.of(row)


def record_move(
    session: Session, app: str, stage: str, numbers: dict, bars_met: bool | None, by: str | None, forced: bool
) -> Policy:
    """Set the stage and keep the move in the history."""
    row = session.get(ReviewPolicy, app)
    if row is None:
        raise NotFound(f"No review policy for app '{app}'.")
    session.add(
        ReviewStageMove(
            app=app, from_stage=row.stage, to_stage=stage, by=by, bars_met=bars_met, forced=forced, numbers=numbers
        )
    )
    row.stage, row.updated_at = stage, utcnow()
    session.flush()
    return Policy.of(row)


def set_classifier(session: Session, app: str, path: str | None) -> None:
    """Use a trained judge (or, with None, the generic one again)."""
    row = session.get(ReviewPolicy, app)
    if row is None:
        raise NotFound(f"No review policy for app '{app}'.")
    row.judge_classifier, row.updated_at = path, utcnow()


def history(session: Session, app: str) -> list[dict[str, Any]]:
    """The app's stage moves, oldest first."""
    get_policy(session, app)
    moves = session.scalars(select(ReviewStageMove).where(ReviewStageMove.app == app).order_by(ReviewStageMove.id))
    return [
        {
            "at": m.created_at.isoformat(),
            "from": m.from_stage,
            "to": m.to_stage,
            "by": m.by,
            "bars_met": m.bars_met,
            "forced": m.forced,
            "numbers": m.numbers,
        }
        for m in moves
    ]


def check_stage(stage: str) -> str:
    if stage not in STAGES:
        raise InvalidRequest(f"stage: '{stage}' is not a stage; use one of {', '.join(STAGES)}.", param="stage")
    return stage


def _check(registry: Registry, values: dict[str, Any]) -> None:
    """The judge is a chat model fmstack knows, its metric a judge metric, the bars known names per stage."""
    if model := values.get("judge_model"):
        try:
            spec = registry.get(model)
        except ModelNotFound as exc:
            raise NotFound(f"judge_model: {exc.message}", param="judge_model") from None
        if spec.kind != "chat":
            raise InvalidRequest(
                f"judge_model: '{model}' is an embedding model; a judge must be a chat model.", param="judge_model"
            )
    if (metric := values.get("judge_metric")) is not None:
        if metric not in JUDGE_METRICS:
            raise InvalidRequest(
                f"judge_metric: '{metric}' cannot judge production answers; use {' or '.join(JUDGE_METRICS)}.",
                param="judge_metric",
            )
        get_metric(metric)
    for stage, bars in (values.get("bars") or {}).items():
        if stage not in STAGES[:-1]:
            raise InvalidRequest(
                f"bars: '{stage}' has no next stage to move to; set bars for crawl or walk.", param="bars"
            )
        if unknown := sorted(set(bars) - set(BARS)):
            raise InvalidRequest(
                f"bars.{stage}: unknown bar '{unknown[0]}'; known: {', '.join(BARS)}.", param=f"bars.{stage}"
            )
