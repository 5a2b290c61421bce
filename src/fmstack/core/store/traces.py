"""Writing traces off the token path, and reading traces and feedback back.

Requests hand finished trace rows to `TraceWriter`, whose thread commits them in small batches: a slow disk or a
busy PostgreSQL never delays a token, and a committed trace survives the server being killed (WAL).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from datetime import UTC, datetime

from sqlalchemy import Select, case, func, select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from fmstack.core.errors import InvalidRequest, NotFound
from fmstack.core.store.schema import Feedback, Trace, TraceScore

_STOP = object()


class TraceWriter:
    """A background thread that commits trace rows; `flush` waits until everything handed in is committed."""

    def __init__(self, sessions: sessionmaker, batch: int = 64):
        self.sessions = sessions
        self.batch = batch
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="fmstack-traces", daemon=True)
        self._thread.start()

    def write(self, row: dict) -> Future:
        """Hand a row in; the future is done once it is committed (a server waits for it before it ends an answer,
        so an answer a client received completely is never missing from the store, even after kill -9)."""
        done: Future = Future()
        self._queue.put((row, done))
        return done

    def flush(self) -> None:
        self._queue.join()

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            items = [self._queue.get()]
            while len(items) < self.batch and not self._queue.empty():
                items.append(self._queue.get_nowait())
            stop = any(item is _STOP for item in items)
            items = [item for item in items if item is not _STOP]
            self._commit([row for row, _ in items])
            for _, done in items:
                done.set_result(None)
            for _ in range(len(items) + stop):
                self._queue.task_done()
            if stop:
                return

    def _commit(self, rows: list[dict]) -> None:
        if not rows:
            return
        try:
            with self.sessions.begin() as session:
                session.add_all(Trace(**row) for row in rows)
        except Exception:  # one bad row must not lose the others: retry one by one
            for row in rows:
                try:
                    with self.sessions.begin() as session:
                        session.add(Trace(**row))
                except Exception as exc:  # noqa: BLE001 - report and keep serving
                    print(f"fmstack: could not store trace {row.get('id')}: {exc}")


def list_traces(
    session: Session,
    *,
    limit: int = 50,
    offset: int = 0,
    model: str | None = None,
    app: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    oldest_first: bool = False,
    prompt_name: str | None = None,
    prompt_version: int | None = None,
    ids: Select | None = None,
) -> list[Trace]:
    """Traces, newest first; `prompt_name` (and `prompt_version`) keep those made through a stored prompt, `ids`
    (a query of trace ids) those it selects."""
    order = (Trace.created_at, Trace.id) if oldest_first else (Trace.created_at.desc(), Trace.id)
    query = select(Trace).options(selectinload(Trace.feedback), selectinload(Trace.scores)).order_by(*order)
    version = str(prompt_version) if prompt_version is not None else None
    filters = ((Trace.model, model), (Trace.app, app), (Trace.status, status), (Trace.prompt_name, prompt_name))
    for column, value in (*filters, (Trace.prompt_version, version)):
        if value is not None:
            query = query.where(column == value)
    if since is not None:
        query = query.where(Trace.created_at >= utc(since))
    if until is not None:
        query = query.where(Trace.created_at < utc(until))
    if ids is not None:
        query = query.where(Trace.id.in_(ids))
    return list(session.scalars(query.limit(limit).offset(offset)))


def iter_traces(session: Session, **filters) -> Iterator[Trace]:
    """All matching traces, oldest first, streamed in pages (for export); traces written meanwhile come last,
    so they cannot shift a page that is still to come."""
    offset = 0
    while page := list_traces(session, limit=500, offset=offset, oldest_first=True, **filters):
        yield from page
        offset += len(page)


def count_traces(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Trace)) or 0


def score_summary(session: Session) -> list[tuple[str, str, float | None, int]]:
    """(metric, model, mean score, number scored) over every trace scored after the fact."""
    query = (
        select(TraceScore.metric, Trace.model, func.avg(TraceScore.value), func.count(TraceScore.id))
        .join(Trace, Trace.id == TraceScore.trace_id)
        .group_by(TraceScore.metric, Trace.model)
    )
    return [(m, model or "unknown", avg, n) for m, model, avg, n in session.execute(query)]


def prompt_stats(session: Session, name: str) -> list[dict]:
    """Per version of a stored prompt: requests, errors, mean latency and time to first token, tokens, cost and
    feedback (thumbs up/down) of the traces made through it, oldest version first."""
    ups = func.sum(case((Feedback.rating == 1, 1), else_=0))
    downs = func.sum(case((Feedback.rating == -1, 1), else_=0))
    feedback = select(Feedback.trace_id, ups.label("up"), downs.label("down")).group_by(Feedback.trace_id).subquery()
    query = (
        select(
            Trace.prompt_version,
            func.count(Trace.id),
            func.sum(case((Trace.status == "ok", 0), else_=1)),
            func.avg(Trace.latency_ms),
            func.avg(Trace.ttft_ms),
            func.avg(Trace.prompt_tokens),
            func.avg(Trace.completion_tokens),
            func.sum(Trace.cost),
            func.coalesce(func.sum(feedback.c.up), 0),
            func.coalesce(func.sum(feedback.c.down), 0),
        )
        .outerjoin(feedback, feedback.c.trace_id == Trace.id)
        .where(Trace.prompt_name == name)
        .group_by(Trace.prompt_version)
    )
    keys = ("version", "requests", "errors", "latency_ms", "ttft_ms", "prompt_tokens", "completion_tokens", "cost")
    rows = []
    for values in session.execute(query):
        row = dict(zip((*keys, "thumbs_up", "thumbs_down"), values, strict=True))
        row["version"] = _version_number(row["version"])
        rows.append(row)
    return sorted(rows, key=lambda r: (r["version"] is None, r["version"] or 0))


def get_trace(session: Session, trace_id: str) -> Trace:
    trace = session.get(Trace, trace_id, options=[selectinload(Trace.feedback), selectinload(Trace.scores)])
    if trace is None:
        raise NotFound(f"No trace with id '{trace_id}'. Recent ones are at /traces and in `fmstack traces list`.")
    return trace


def add_feedback(
    session: Session, trace_id: str, rating: int | None, correction: str | None, comment: str | None
) -> Feedback:
    if rating not in (None, 1, -1):
        raise InvalidRequest("rating must be 1 (thumbs up) or -1 (thumbs down).", param="rating")
    if rating is None and not correction and not comment:
        raise InvalidRequest("Feedback needs a rating, a correction or a comment.", param="rating")
    get_trace(session, trace_id)
    feedback = Feedback(trace_id=trace_id, rating=rating, correction=correction, comment=comment)
    session.add(feedback)
    session.flush()
    return feedback


def trace_dict(trace: Trace) -> dict:
    """A trace as plain JSON-able data, with its feedback (for the API, the UI and `traces export`)."""
    data = {c.name: getattr(trace, c.name) for c in Trace.__table__.columns}
    data["created_at"] = _utc(trace.created_at).isoformat()
    data["prompt_version"] = _version_number(trace.prompt_version)
    data["feedback"] = [
        {
            "id": f.id,
            "created_at": _utc(f.created_at).isoformat(),
            "rating": f.rating,
            "correction": f.correction,
            "comment": f.comment,
        }
        for f in trace.feedback
    ]
    data["scores"] = [
        {
            "metric": sc.metric,
            "value": sc.value,
            "passed": sc.passed,
            "reason": sc.reason,
            "error": sc.error,
            "judge": sc.judge,
            "created_at": _utc(sc.created_at).isoformat(),
        }
        for sc in trace.scores
    ]
    return data


def _version_number(value: str | None) -> int | str | None:
    """The prompt version column holds text (since 0001); versions written by fmstack are numbers."""
    return int(value) if value is not None and value.isdigit() else value


def _utc(moment: datetime) -> datetime:
    """SQLite gives back naive datetimes; they were stored in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def utc(moment: datetime) -> datetime:
    """A moment to compare with stored times: in UTC (SQLite compares a zoned time by its wall clock), a naive
    one taken as UTC already."""
    return _utc(moment).astimezone(UTC)
