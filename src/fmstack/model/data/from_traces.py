"""Training data from the product's own traces: the closed loop from feedback to fine-tuning.

Users judge answers in the chat page or through `POST /v1/feedback` (thumbs up/down, a better answer). Those
judgements are supervision: an approved answer is an SFT target, a corrected answer is a better target than the
model's own and a preference (correction over original), and two answers to the same request, one liked and one
disliked, are a preference pair. The records use the formats `fmstack train finetune` and `fmstack train dpo` read
(TRL's conversational formats), so the file feeds training unchanged.

Decisions in the review queue (`fmstack review`) count the same way: an approval is a thumbs up, a rejection a
thumbs down, an edit a correction. A trace's rating is the sum of its thumbs (+1/-1), so several reviewers can agree
or cancel out; its correction is the newest one given, a reviewer's edit after a user's. Only successful chat
traces whose request holds the exact messages the model saw are used: RAG answers are skipped, since their grounded
prompt (the retrieved passages) is not stored with the request, and raw completions have no messages.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from itertools import product
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from fmstack.core.errors import FmstackError, InvalidRequest
from fmstack.core.store.schema import ReviewItem, Trace
from fmstack.core.store.traces import iter_traces
from fmstack.engines.messages import Message
from fmstack.model.data.stages import atomic_write_bytes

FORMATS = ("sft", "dpo")
# Endpoints whose stored request holds the messages the model answered (a stored prompt's are rendered).
CHAT_ENDPOINTS = ("chat.completions", "prompts.chat.completions")
CHAT_ROLES = ("system", "user", "assistant")  # what an SFT or DPO file holds
REVIEW_RATINGS = {"approved": 1, "edited": 0, "rejected": -1}  # a review decision as a thumb (an edit corrects)


@dataclass
class Judged:
    """One answered request with what users said about it."""

    trace_id: str
    prompt: list[dict]
    answer: str
    rating: int
    correction: str | None

    @property
    def key(self) -> str:
        """Requests with the same messages are the same prompt, whatever their sampling parameters."""
        return json.dumps(self.prompt, sort_keys=True, ensure_ascii=False)


@dataclass
class Export:
    """The records written and how many of each kind, plus what was skipped and why."""

    records: list[dict]
    counts: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)


def export_traces(
    sessions: sessionmaker,
    fmt: str,
    out: Path,
    *,
    app: str | None = None,
    model: str | None = None,
    since: datetime | None = None,
    min_rating: int = 1,
) -> Export:
    """Turn judged traces into an SFT or DPO JSONL file at `out` (written atomically) and say what went in."""
    if fmt not in FORMATS:
        raise InvalidRequest(f"--format {fmt!r} is not supported; use sft or dpo.")
    if min_rating < 1:
        raise InvalidRequest(f"--min-rating {min_rating}: must be at least 1 (a net thumbs up), or bad answers train.")
    skipped: Counter = Counter()
    with sessions() as session:
        decisions = _review_decisions(session, app)
        traces = iter_traces(session, app=app, model=model, since=since, status="ok")
        judged = list(_judged(traces, decisions, skipped))
    result = sft_records(judged, min_rating) if fmt == "sft" else dpo_records(judged, min_rating)
    result.skipped.update(skipped)
    if not result.records:
        raise FmstackError(
            f"No {fmt} records: {len(judged)} judged chat trace(s) matched, none {_needs(fmt, min_rating)}. "
            "Rate or correct answers in the chat page (or POST /v1/feedback), or widen --app/--model/--since."
        )
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in result.records)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, lines.encode())
    return result


def sft_records(judged: Iterable[Judged], min_rating: int = 1) -> Export:
    """A corrected answer replaces the model's; otherwise an answer rated at least `min_rating` is kept as is."""
    result = Export(records=[])
    seen: set[str] = set()
    for item in judged:
        if item.correction:
            kind, answer = "corrected", item.correction
        elif item.rating >= min_rating:
            kind, answer = "approved", item.answer
        else:
            continue
        record = {"messages": [*item.prompt, {"role": "assistant", "content": answer}]}
        if _first(record, seen, result.skipped):
            result.records.append(record)
            result.counts[kind] += 1
    return result


def dpo_records(judged: Iterable[Judged], min_rating: int = 1) -> Export:
    """Pairs: a correction over the original answer; per prompt, every liked answer over every disliked one."""
    result = Export(records=[])
    seen: set[str] = set()
    liked: dict[str, list[Judged]] = defaultdict(list)
    disliked: dict[str, list[Judged]] = defaultdict(list)
    for item in judged:
        if item.correction:
            _pair(result, seen, "corrected", item.prompt, item.correction, item.answer)
        elif item.rating >= min_rating:
            liked[item.key].append(item)
        elif item.rating < 0:
            disliked[item.key].append(item)
    for key, ups in liked.items():
        for up, down in product(ups, disliked.get(key, [])):
            _pair(result, seen, "thumbs up over down", up.prompt, up.answer, down.answer)
    return result


def _pair(result: Export, seen: set[str], kind: str, prompt: list[dict], chosen: str, rejected: str) -> None:
    if chosen.strip() == rejected.strip():
        result.skipped["chosen same as rejected"] += 1
        return
    record = {
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }
    if _first(record, seen, result.skipped):
        result.records.append(record)
        result.counts[kind] += 1


def _first(record: dict, seen: set[str], skipped: Counter) -> bool:
    """The same request asked and judged twice is one record: duplicates would weigh it double."""
    key = json.dumps(record, sort_keys=True, ensure_ascii=False)
    if key in seen:
        skipped["duplicate"] += 1
        return False
    seen.add(key)
    return True


def _review_decisions(session: Session, app: str | None) -> dict[str, list[tuple[int, str | None]]]:
    """What reviewers decided in the review queue (`fmstack review`), by trace, oldest first, as (rating,
    correction): approved +1, rejected -1, edited 0 with the edit as the correction."""
    query = select(ReviewItem.trace_id, ReviewItem.status, ReviewItem.edited_text).where(
        ReviewItem.status.in_(REVIEW_RATINGS)
    )
    if app is not None:
        query = query.where(ReviewItem.app == app)
    decisions: dict[str, list[tuple[int, str | None]]] = defaultdict(list)
    for trace_id, status, edited in session.execute(query.order_by(ReviewItem.reviewed_at)):
        decisions[trace_id].append((REVIEW_RATINGS[status], edited))
    return decisions


def _judged(traces: Iterable[Trace], decisions: dict[str, list], skipped: Counter) -> Iterable[Judged]:
    for trace in traces:
        reviewed = decisions.get(trace.id, [])
        if not trace.feedback and not reviewed:
            continue
        reason = _unusable(trace)
        if reason:
            skipped[reason] += 1
            continue
        prompt = _prompt(trace.request["messages"])
        if prompt is None:
            skipped["messages not plain text"] += 1
            continue
        corrections = [f.correction for f in trace.feedback if f.correction and f.correction.strip()]
        corrections += [edit for _, edit in reviewed if edit and edit.strip()]  # a reviewer's edit has the last word
        rating = sum(f.rating or 0 for f in trace.feedback) + sum(r for r, _ in reviewed)
        yield Judged(trace.id, prompt, trace.response_text or "", rating, corrections[-1] if corrections else None)


def _unusable(trace: Trace) -> str | None:
    if trace.endpoint == "rag.chat.completions":
        return "RAG answer (grounded prompt not stored)"
    if trace.endpoint not in CHAT_ENDPOINTS or not isinstance(trace.request, dict) or not trace.request.get("messages"):
        return "not a chat request"
    if not (trace.response_text or "").strip():
        return "empty answer"
    return None


def _prompt(messages: list) -> list[dict] | None:
    """The request's messages as plain {role, content}, ending with the user's turn the answer replied to."""
    try:
        plain = [Message.model_validate(m).as_template_input() for m in messages]
    except (ValidationError, FmstackError, TypeError):
        return None
    if plain[-1]["role"] != "user" or any(m["role"] not in CHAT_ROLES for m in plain):
        return None  # an assistant prefix or a tool turn: the answer is not a plain reply to the user
    return plain


def _needs(fmt: str, min_rating: int) -> str:
    if fmt == "sft":
        return f"corrected or rated at least {min_rating:+d}"
    return f"corrected, or liked (rating >= {min_rating}) and disliked answers to the same messages"
