"""The review queue: answers waiting for a person, who opens the next one, approves, edits, rejects or skips it.

Each decision is one conditional UPDATE (`WHERE status = 'pending'`), so two reviewers, the page and the CLI, or two
server processes can race and exactly one wins; the loser gets a 409 naming who decided first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import case, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from fmstack.app.review.policy import Policy, find_policy
from fmstack.app.review.sampling import sampled
from fmstack.app.review.stats import DECIDED, edit_distance
from fmstack.core.errors import FmstackError, InvalidRequest, NotFound
from fmstack.core.store.schema import ReviewItem, Trace, utcnow

REASONS = ("crawl", "sampled", "thumbs-down", "judge-low", "judge-error")
STATUSES = ("pending", *DECIDED, "skipped")
ACTIONS = ("approve", "edit", "reject", "skip")
OPEN_FOR = timedelta(minutes=10)  # an item a reviewer opened is not offered to others for this long


class AlreadyReviewed(FmstackError):
    """The item was decided before this decision arrived."""

    status = 409
    type = "conflict_error"


@dataclass
class Verdict:
    """An AI judge's opinion of one answer: a score from 0 (bad) to 1 (good), or why it could not give one."""

    score: float | None
    reason: str | None
    judge: str
    error: str | None = None


def enqueue(session: Session, policy: Policy, trace_id: str, answer: str, reason: str) -> ReviewItem | None:
    """Queue an answer for review once (a second reason to review it adds nothing: None); a `double_share` of them
    is queued twice, for a second reviewer."""
    if session.scalar(select(ReviewItem.id).where(ReviewItem.trace_id == trace_id, ReviewItem.copy == 0)):
        return None
    copies = 2 if sampled(trace_id, policy.double_share, "double") else 1
    items = [
        ReviewItem(
            app=policy.app, trace_id=trace_id, copy=c, stage=policy.stage, reason=reason, answer=answer, skipped_by=[]
        )
        for c in range(copies)
    ]
    session.add_all(items)
    session.flush()
    return items[0]


def queue_thumbs_down(session: Session, trace_id: str) -> ReviewItem | None:
    """A thumbs-down on an answer of an app under review sends it to a person (once: an answer already queued, a
    held crawl answer among them, is not queued again)."""
    trace = session.get(Trace, trace_id)
    policy = find_policy(session, trace.app) if trace is not None else None
    if policy is None or trace.status != "ok" or trace.response_text is None:
        return None
    try:
        with session.begin_nested():  # a sample of the same answer queued meanwhile: keep the feedback anyway
            return enqueue(session, policy, trace_id, trace.response_text, "thumbs-down")
    except IntegrityError:
        return None


def record_verdict(session: Session, trace_id: str, verdict: Verdict) -> None:
    """Show the judge's score and reason on every copy of an answer's review."""
    session.execute(
        update(ReviewItem)
        .where(ReviewItem.trace_id == trace_id)
        .values(judge_score=verdict.score, judge_reason=verdict.reason or verdict.error, judge=verdict.judge)
    )


def next_item(session: Session, reviewer: str, app: str | None = None) -> ReviewItem | None:
    """The next pending item for `reviewer`, and mark it open by them: first those assigned to them, then held
    crawl answers (a user is waiting), then the oldest. Never one they skipped, one open by someone else, or the
    second review of an answer they already reviewed."""
    _need_reviewer(reviewer)
    now = utcnow()
    query = select(ReviewItem).where(
        ReviewItem.status == "pending",
        or_(ReviewItem.assignee.is_(None), ReviewItem.assignee == reviewer),
    )
    if app:
        query = query.where(ReviewItem.app == app)
    first = (case((ReviewItem.assignee == reviewer, 0), else_=1), case((ReviewItem.reason == "crawl", 0), else_=1))
    candidates = session.scalars(query.order_by(*first, ReviewItem.id).limit(500)).all()
    reviewed = set(
        session.scalars(
            select(ReviewItem.trace_id).where(
                ReviewItem.trace_id.in_({c.trace_id for c in candidates}), ReviewItem.reviewer == reviewer
            )
        )
    )
    item = next((c for c in candidates if _free(c, reviewer, now) and c.trace_id not in reviewed), None)
    if item is None:
        return None
    item.opened_by, item.opened_at = reviewer, now
    session.flush()
    return item


def _free(item: ReviewItem, reviewer: str, now: datetime) -> bool:
    if reviewer in (item.skipped_by or []):
        return False
    opened = item.opened_at and _utc(item.opened_at) > now - OPEN_FOR
    return not opened or item.opened_by == reviewer


def decide(
    session: Session,
    item_id: int,
    action: str,
    reviewer: str,
    *,
    text: str | None = None,
    reason: str | None = None,
    seconds: float | None = None,
) -> ReviewItem:
    """Approve, edit (the edit is the correction), reject (with a reason) or skip a pending item.

    An edit that changes nothing is an approval. Skipping closes a sampled item unreviewed; a held crawl answer
    cannot be dropped while its user waits, so skipping it hands it to the next reviewer. `seconds` is the time
    spent (the page measures it); without it, the time since the reviewer opened the item."""
    _need_reviewer(reviewer)
    if action not in ACTIONS:
        raise InvalidRequest(f"action: '{action}' is not a decision; use {', '.join(ACTIONS)}.", param="action")
    if seconds is not None and not 0 <= seconds < 86_400:
        raise InvalidRequest("seconds: must be between 0 and 86400.", param="seconds")
    item = get_item(session, item_id)
    _check_open(session, item, reviewer)
    if action == "skip" and item.reason == "crawl":
        return _pass_on(session, item, reviewer)
    values = _decision(item, action, text, reason) | {
        "reviewer": reviewer,
        "reviewed_at": utcnow(),
        "seconds": seconds if seconds is not None else _seconds_open(item, reviewer),
        "opened_by": None,
    }
    done = session.execute(
        update(ReviewItem).where(ReviewItem.id == item_id, ReviewItem.status == "pending").values(**values)
    )
    if done.rowcount != 1:
        _conflict(session, item_id)
    session.flush()
    session.refresh(item)
    return item


def _decision(item: ReviewItem, action: str, text: str | None, reason: str | None) -> dict[str, Any]:
    if action == "edit":
        if not (text or "").strip():
            raise InvalidRequest("text: an edit needs the corrected answer.", param="text")
        if text.strip() == item.answer.strip():
            return {"status": "approved", "edit_distance": 0.0}
        return {"status": "edited", "edited_text": text, "edit_distance": edit_distance(item.answer, text)}
    if action == "reject":
        if not (reason or "").strip():
            raise InvalidRequest("reason: say why the answer is rejected (the user is told).", param="reason")
        return {"status": "rejected", "reject_reason": reason.strip()}
    if action == "skip":
        return {"status": "skipped"}
    return {"status": "approved", "edit_distance": 0.0}


def _check_open(session: Session, item: ReviewItem, reviewer: str) -> None:
    """Still pending, and not the second review of an answer this reviewer already reviewed."""
    if item.status != "pending":
        _conflict(session, item.id)
    other = session.scalar(
        select(ReviewItem.reviewer).where(ReviewItem.trace_id == item.trace_id, ReviewItem.id != item.id)
    )
    if other == reviewer:
        raise AlreadyReviewed(
            f"Review {item.id} is the second review of an answer you reviewed: another reviewer must do it "
            "(agreement between two people is what it measures)."
        )


def _conflict(session: Session, item_id: int):
    session.expire_all()  # read the decision that won, not this session's copy
    item = get_item(session, item_id)
    raise AlreadyReviewed(
        f"Review {item_id} was already {item.status} by {item.reviewer or 'someone else'}; take the next one."
    )


def _pass_on(session: Session, item: ReviewItem, reviewer: str) -> ReviewItem:
    item.skipped_by = [*(item.skipped_by or []), reviewer]
    item.opened_by = item.opened_at = None
    if item.assignee == reviewer:
        item.assignee = None
    session.flush()
    return item


def assign(session: Session, item_id: int, assignee: str | None) -> ReviewItem:
    """Give a pending item to one reviewer (None: to anyone)."""
    item = get_item(session, item_id)
    if item.status != "pending":
        _conflict(session, item_id)
    if assignee is not None and len(assignee) > 200:
        raise InvalidRequest("assignee: a name of at most 200 characters.", param="assignee")
    item.assignee = (assignee or "").strip() or None
    session.flush()
    return item


def get_item(session: Session, item_id: int) -> ReviewItem:
    item = session.get(ReviewItem, item_id)
    if item is None:
        raise NotFound(f"No review item {item_id}. List them with `fmstack review list`.")
    return item


def list_items(
    session: Session,
    *,
    app: str | None = None,
    status: str | None = None,
    reason: str | None = None,
    limit: int = 50,
) -> list[ReviewItem]:
    """Items, newest first."""
    if status is not None and status not in STATUSES:
        raise InvalidRequest(f"status: '{status}' is not a status; use {', '.join(STATUSES)}.", param="status")
    if reason is not None and reason not in REASONS:
        raise InvalidRequest(f"reason: '{reason}' is not a reason; use {', '.join(REASONS)}.", param="reason")
    query = select(ReviewItem).order_by(ReviewItem.id.desc()).limit(limit)
    for column, value in ((ReviewItem.app, app), (ReviewItem.status, status), (ReviewItem.reason, reason)):
        if value is not None:
            query = query.where(column == value)
    return list(session.scalars(query))


def pending_count(session: Session, app: str | None = None) -> int:
    query = select(func.count()).select_from(ReviewItem).where(ReviewItem.status == "pending")
    return session.scalar(query.where(ReviewItem.app == app) if app else query) or 0


def held_answer(session: Session, trace_id: str) -> ReviewItem | None:
    """The decision on a held crawl answer: the first decided of its reviews, else the pending one (None: the
    answer was never held)."""
    query = select(ReviewItem).where(ReviewItem.trace_id == trace_id, ReviewItem.reason == "crawl")
    items = session.scalars(query.order_by(ReviewItem.copy)).all()
    decided = sorted((i for i in items if i.status in DECIDED), key=lambda i: _utc(i.reviewed_at))
    return decided[0] if decided else next(iter(items), None)


async def wait_for_decision(
    sessions: sessionmaker,
    trace_id: str,
    timeout: float,
    *,
    poll: float = 0.5,
    gone: Callable[[], Awaitable[bool]] | None = None,
) -> ReviewItem | None:
    """Wait until a person decides on a held answer, reading the store (decisions may come from another process:
    the CLI). None if `timeout` passes or the client is `gone` first."""
    deadline = time.monotonic() + timeout

    def read() -> ReviewItem | None:
        with sessions() as session:
            item = held_answer(session, trace_id)
            return item if item is not None and item.status in DECIDED else None

    while time.monotonic() < deadline:
        if (item := await asyncio.to_thread(read)) is not None:
            return item
        if gone is not None and await gone():
            return None
        await asyncio.sleep(min(poll, max(0.0, deadline - time.monotonic())))
    return await asyncio.to_thread(read)


def item_dict(item: ReviewItem, trace: Trace | None = None, policy: Policy | None = None) -> dict[str, Any]:
    """An item as plain data; with its trace, what the reviewer needs: the conversation, the retrieved sources of a
    RAG answer, the model; with its policy, the rubric."""
    data = {c.name: getattr(item, c.name) for c in ReviewItem.__table__.columns}
    for name in ("created_at", "opened_at", "reviewed_at"):
        data[name] = _utc(data[name]).isoformat() if data[name] else None
    data["final_text"] = final_text(item)
    if trace is not None:
        request = trace.request or {}
        data["trace"] = {
            "model": trace.model,
            "endpoint": trace.endpoint,
            "user": trace.user,
            "messages": conversation(request),
            "prompt": request.get("prompt"),
            "sources": (trace.retrieval or {}).get("chunks") or [],
            "created_at": _utc(trace.created_at).isoformat(),
        }
    if policy is not None:
        data["rubric"], data["threshold"] = policy.rubric, policy.threshold
    return data


def conversation(request: dict | None) -> list[dict] | None:
    """The messages a request answered: a chat request's `messages`, or the Responses API's `input` (a string is
    one user turn)."""
    request = request or {}
    turns = request.get("messages") or request.get("input")
    return [{"role": "user", "content": turns}] if isinstance(turns, str) else turns


def final_text(item: ReviewItem) -> str | None:
    """What a person let through: the edit, or the answer as it was; None while pending or when rejected."""
    if item.status == "edited":
        return item.edited_text
    return item.answer if item.status == "approved" else None


def _need_reviewer(reviewer: str) -> None:
    if not (reviewer or "").strip() or len(reviewer) > 200:
        raise InvalidRequest(
            "reviewer: say who is reviewing (a name of at most 200 characters), so decisions and time are counted.",
            param="reviewer",
        )


def _seconds_open(item: ReviewItem, reviewer: str) -> float | None:
    if item.opened_by != reviewer or item.opened_at is None:
        return None
    return (utcnow() - _utc(item.opened_at)).total_seconds()


def _utc(moment: datetime) -> datetime:
    """SQLite gives back naive datetimes; they were stored in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
