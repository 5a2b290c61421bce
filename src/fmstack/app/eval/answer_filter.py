"""Keep only the generated answers that pass an eval metric: `fmstack train distill --filter json_valid` trains the
student on the teacher's good answers only. Any metric a suite can use works, judges included; an answer the
metric cannot score (a reference it needs is missing, the judge never answered) is dropped, not kept."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from pydantic import ValidationError
from sqlalchemy.orm import sessionmaker

from fmstack.app.eval.generate import Generator
from fmstack.app.eval.metrics import Case, Metric, MetricContext, Output, get_metric
from fmstack.app.eval.runner import OutputCache, make_judge, score_one
from fmstack.core.errors import InvalidRequest

Item = tuple[list[dict], str, str | None]  # (prompt messages, answer, reference)


def parse_filter(spec: str, judge: str | None = None) -> Metric:
    """`NAME` or `NAME>=THRESHOLD` (`NAME<=THRESHOLD` for a metric where lower is better); the threshold defaults
    to 1, i.e. a pass for 0/1 metrics such as json_valid or contains. A judged metric needs `judge`."""
    name, threshold = spec, 1.0
    for sign in (">=", "<="):
        if sign in spec:
            name, _, number = spec.partition(sign)
            try:
                threshold = float(number)
            except ValueError:
                raise InvalidRequest(f"--filter {spec!r}: {number!r} is not a number.") from None
    try:
        metric = get_metric(name.strip(), {"threshold": threshold})
    except KeyError:
        raise InvalidRequest(f"--filter {spec!r}: no metric {name.strip()!r}; see `fmstack eval metrics`.") from None
    except ValidationError as exc:
        raise InvalidRequest(f"--filter {spec!r}: {exc.errors()[0]['msg']}.") from None
    if "judge" in metric.requires and judge is None:
        raise InvalidRequest(f"--filter {metric.name} is judged by a model; name it with --judge MODEL.")
    return metric


def answer_filter(
    metric: Metric, sessions: sessionmaker, generator: Generator, embed: Callable | None, judge: str | None
) -> Callable[[list[Item]], list[bool]]:
    """A filter for `fmstack.model.train.distill`: whether each answer passes `metric`."""

    async def scores(items: list[Item]) -> list[bool]:
        ctx = MetricContext(embed, make_judge(OutputCache(sessions, True), generator, judge), judge)
        kept = []
        for i, (messages, answer, reference) in enumerate(items):
            case = Case(str(i), messages, reference=reference)
            score = await asyncio.to_thread(score_one, metric, case, Output(answer), ctx)
            kept.append(score.passed is True)
        return kept

    return lambda items: asyncio.run(scores(items))
