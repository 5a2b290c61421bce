"""Scoring answers that already exist: stored production traces (`eval score --traces`) and labelled examples
for judge calibration (`eval calibrate`). Nothing is generated except the judge's verdicts."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy.orm import sessionmaker

from fmstack.app.eval.calibrate import agreement
from fmstack.app.eval.generate import Generator
from fmstack.app.eval.metrics import Case, Metric, MetricContext, Output, Score
from fmstack.app.eval.runner import OutputCache, make_judge, score_one
from fmstack.core.errors import FmstackError, InvalidRequest
from fmstack.core.store.schema import JudgeCalibration, TraceScore
from fmstack.core.store.traces import list_traces

LABELS = {"correct": 1, "incorrect": 0, "good": 1, "bad": 0, "yes": 1, "no": 0, True: 1, False: 0}


@dataclass
class Labelled:
    case: Case
    output: Output
    label: int


async def _score_all(items: list[tuple[Case, Output]], metrics: list[Metric], ctx_factory) -> list[list[Score]]:
    ctx = ctx_factory()
    results = []
    for case, output in items:
        results.append([await asyncio.to_thread(score_one, m, case, output, ctx) for m in metrics])
    return results


def _context(sessions: sessionmaker, generator: Generator, judge: str | None, embed) -> callable:
    return lambda: MetricContext(embed, make_judge(OutputCache(sessions, True), generator, judge), judge)


def score_traces(
    sessions: sessionmaker,
    generator: Generator,
    embed,
    metrics: list[Metric],
    judge: str | None,
    *,
    model: str | None = None,
    app: str | None = None,
    since: datetime | None = None,
    limit: int = 100,
) -> list[tuple[str, list[Score]]]:
    """Score stored successful chat traces and attach the scores to them."""
    with sessions() as s:
        traces = [
            t
            for t in list_traces(s, limit=limit, model=model, app=app, status="ok", since=since)
            if (t.request or {}).get("messages") and t.response_text is not None
        ]
        items = [(_trace_case(t), Output(t.response_text, [t.response_text])) for t in traces]
        ids = [t.id for t in traces]
    if not items:
        raise FmstackError("No stored chat traces match those filters; nothing to score.")
    scores = asyncio.run(_score_all(items, metrics, _context(sessions, generator, judge, embed)))
    with sessions.begin() as s:
        for trace_id, row in zip(ids, scores, strict=True):
            for metric, score in zip(metrics, row, strict=True):
                s.add(
                    TraceScore(
                        trace_id=trace_id,
                        metric=metric.name,
                        value=score.value,
                        passed=score.passed,
                        reason=score.reason,
                        error=score.error,
                        judge=judge if "judge" in metric.requires else None,
                    )
                )
    return list(zip(ids, scores, strict=True))


def _trace_case(trace) -> Case:
    corrections = [f.correction for f in trace.feedback if f.correction]
    retrieved = (trace.retrieval or {}).get("chunks") or []  # RAG answers: judged against what they were given
    return Case(
        trace.id,
        trace.request["messages"],
        reference=corrections[-1] if corrections else None,
        context=[c["text"] for c in retrieved] or None,
    )


def read_labelled(path: Path) -> list[Labelled]:
    """JSONL lines {"question", "answer", "label", optional "reference" and "context"}; labels are 1/0,
    correct/incorrect, good/bad, or 1–5 scores."""
    if not path.is_file():
        raise InvalidRequest(f"{path}: no such labels file.")
    items = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"{where}: not valid JSON ({exc.msg}).") from None
        for field in ("question", "answer", "label"):
            if field not in row:
                raise InvalidRequest(f"{where}: missing field '{field}'.")
        label = LABELS.get(row["label"], row["label"])
        if not isinstance(label, int):
            raise InvalidRequest(f"{where}: field 'label' is {row['label']!r}; use 1/0, correct/incorrect or 1–5.")
        case = Case(
            f"item-{number}",
            [{"role": "user", "content": row["question"]}],
            reference=row.get("reference"),
            context=row.get("context"),
        )
        items.append(Labelled(case, Output(row["answer"], [row["answer"]]), label))
    if not items:
        raise InvalidRequest(f"{path}: no labelled items.")
    return items


def labelled_from_feedback(sessions: sessionmaker, limit: int = 500) -> list[Labelled]:
    """Rated traces as human labels: net thumbs up = 1 (good answer), net thumbs down = 0."""
    items = []
    with sessions() as s:
        for t in list_traces(s, limit=100_000, status="ok"):
            ratings = [f.rating for f in t.feedback if f.rating is not None]
            if not ratings or sum(ratings) == 0 or not (t.request or {}).get("messages"):
                continue
            items.append(Labelled(_trace_case(t), Output(t.response_text or "", []), int(sum(ratings) > 0)))
            if len(items) >= limit:
                break
    if not items:
        raise FmstackError("No rated traces yet: rate answers in the chat page (thumbs up/down) first.")
    return items


def judge_label(metric: Metric, score: Score, binary: bool, pass_score: float) -> int | None:
    """The judge's verdict on the human labels' scale: pass/fail when humans labelled pass/fail."""
    if score.value is None:
        return None
    if binary and metric.name == "rubric":
        return int(score.value >= pass_score)
    return int(round(score.value))


def calibrate_judge(
    sessions: sessionmaker,
    generator: Generator,
    embed,
    metric: Metric,
    judge: str,
    items: list[Labelled],
    pass_score: float = 4,
) -> dict:
    """Judge every labelled item, measure agreement with the humans and remember it for reports."""
    scores = asyncio.run(
        _score_all([(i.case, i.output) for i in items], [metric], _context(sessions, generator, judge, embed))
    )
    human = [i.label for i in items]
    binary = set(human) <= {0, 1}
    verdicts = [judge_label(metric, row[0], binary, pass_score) for row in scores]
    result = agreement(human, verdicts)
    with sessions.begin() as s:
        s.add(
            JudgeCalibration(
                judge=judge,
                metric=metric.name,
                n=result["n"],
                accuracy=result.get("accuracy"),
                kappa=result.get("kappa"),
                details=json.loads(json.dumps(result, default=str)),
            )
        )
    return result
