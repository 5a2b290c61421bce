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

Tool conversations are kept in OpenAI's message form: assistant turns with `tool_calls`, `tool` results with their
`tool_call_id`, an answer that calls tools as an assistant message with `tool_calls` (parsed from the model's text,
or from a correction written the same way, `<tool_call>{"name": …, "arguments": …}</tool_call>`), and the request's
`tools` beside the messages (`{"messages": […], "tools": […]}`, TRL's conversational format with tools).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from itertools import product
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy import Select, func, select, true, union_all
from sqlalchemy.orm import Session, sessionmaker

from fmstack.core.errors import FmstackError, InvalidRequest
from fmstack.core.store.schema import Feedback, ReviewItem, Trace
from fmstack.core.store.traces import iter_traces, utc
from fmstack.engines import tools as toolkit
from fmstack.engines.messages import Message
from fmstack.model.data.stages import atomic_write_bytes

FORMATS = ("sft", "dpo")
# Endpoints whose stored request holds the messages the model answered (a stored prompt's are rendered).
CHAT_ENDPOINTS = ("chat.completions", "prompts.chat.completions")
CHAT_ROLES = ("system", "user", "assistant", "tool")  # what an SFT or DPO file holds
REVIEW_RATINGS = {"approved": 1, "edited": 0, "rejected": -1}  # a review decision as a thumb (an edit corrects)


@dataclass
class Judged:
    """One answered request with what users said about it."""

    trace_id: str
    prompt: list[dict]
    answer: str
    rating: int
    correction: str | None
    tools: list[dict] | None = None  # the functions the model was offered, when it could call them

    @property
    def key(self) -> str:
        """Requests with the same messages are the same prompt, whatever their sampling parameters."""
        return json.dumps([self.prompt, self.tools], sort_keys=True, ensure_ascii=False)

    def reply(self, text: str) -> dict:
        """`text` as the assistant's message: with `tool_calls` when it holds calls and tools were offered. Call
        ids are derived from the conversation, so the same answer makes the same record."""
        content, calls = toolkit.parse(text) if self.tools else (text, [])
        if not calls:
            return {"role": "assistant", "content": text}
        digest = hashlib.sha256(self.key.encode()).hexdigest()
        for i, call in enumerate(calls):
            call["id"] = f"call_{digest[:16]}{i}"
        return {"role": "assistant", "content": content, "tool_calls": calls}

    def with_tools(self, record: dict) -> dict:
        return record | {"tools": self.tools} if self.tools else record


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
    until: datetime | None = None,
    min_rating: int = 1,
    by_judgement: bool = False,
) -> Export:
    """Turn judged traces into an SFT or DPO JSONL file at `out` (written atomically) and say what went in.
    `since`/`until` bound when a trace was made; with `by_judgement`, when it was last judged (its newest thumb,
    correction or review decision), so feedback given late on an old answer still reaches the next loop."""
    if fmt not in FORMATS:
        raise InvalidRequest(f"--format {fmt!r} is not supported; use sft or dpo.")
    if min_rating < 1:
        raise InvalidRequest(f"--min-rating {min_rating}: must be at least 1 (a net thumbs up), or bad answers train.")
    skipped: Counter = Counter()
    with sessions() as session:
        decisions = _review_decisions(session, app)
        window = {"ids": judged_between(app, since, until)} if by_judgement else {"since": since, "until": until}
        traces = iter_traces(session, app=app, model=model, status="ok", **window)
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
        record = item.with_tools({"messages": [*item.prompt, item.reply(answer)]})
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
            _pair(result, seen, "corrected", item, item.correction, item.answer)
        elif item.rating >= min_rating:
            liked[item.key].append(item)
        elif item.rating < 0:
            disliked[item.key].append(item)
    for key, ups in liked.items():
        for up, down in product(ups, disliked.get(key, [])):
            _pair(result, seen, "thumbs up over down", up, up.answer, down.answer)
    return result


def _pair(result: Export, seen: set[str], kind: str, item: Judged, chosen: str, rejected: str) -> None:
    if chosen.strip() == rejected.strip():
        result.skipped["chosen same as rejected"] += 1
        return
    answers = {"chosen": [item.reply(chosen)], "rejected": [item.reply(rejected)]}
    record = item.with_tools({"prompt": item.prompt} | answers)
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


def judged_between(app: str | None, since: datetime | None, until: datetime | None) -> Select:
    """The ids of traces whose newest judgement (a thumb or correction, a review decision) falls in [since, until)."""
    times = union_all(
        select(Feedback.trace_id.label("trace_id"), Feedback.created_at.label("at")),
        select(ReviewItem.trace_id, ReviewItem.reviewed_at)
        .where(ReviewItem.status.in_(REVIEW_RATINGS))
        .where(ReviewItem.app == app if app is not None else true()),
    ).subquery()
    last = select(times.c.trace_id).group_by(times.c.trace_id)
    if since is not None:
        last = last.having(func.max(times.c.at) >= utc(since))
    if until is not None:
        last = last.having(func.max(times.c.at) < utc(until))
    return last


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
        offered = _offered(trace.request)
        if offered is None:
            skipped["tools not valid"] += 1
            continue
        corrections = [f.correction for f in trace.feedback if f.correction and f.correction.strip()]
        corrections += [edit for _, edit in reviewed if edit and edit.strip()]  # a reviewer's edit has the last word
        rating = sum(f.rating or 0 for f in trace.feedback) + sum(r for r, _ in reviewed)
        correction = corrections[-1] if corrections else None
        yield Judged(trace.id, prompt, trace.response_text or "", rating, correction, offered or None)


def _unusable(trace: Trace) -> str | None:
    if trace.endpoint == "rag.chat.completions":
        return "RAG answer (grounded prompt not stored)"
    if trace.endpoint not in CHAT_ENDPOINTS or not isinstance(trace.request, dict) or not trace.request.get("messages"):
        return "not a chat request"
    if not (trace.response_text or "").strip():
        return "empty answer"
    return None


def _prompt(messages: list) -> list[dict] | None:
    """The request's messages as {role, content} (with an assistant's `tool_calls`, a tool result's
    `tool_call_id`), ending with the turn the answer replied to: the user's, or a tool's result."""
    try:
        plain = [Message.model_validate(m).as_template_input() for m in messages]
        toolkit.check_tool_messages(plain)
    except (ValidationError, FmstackError, TypeError):
        return None
    if plain[-1]["role"] not in ("user", "tool") or any(m["role"] not in CHAT_ROLES for m in plain):
        return None  # an assistant prefix: the answer is not a reply to the user or to a tool
    return plain


def _offered(request: dict) -> list[dict] | None:
    """The tools the answer could call, as the request gave them ([] for none, tool_choice "none" included);
    None when they are not valid tool definitions."""
    tools = request.get("tools")
    if not tools or request.get("tool_choice") == "none":
        return []
    try:
        toolkit.check_tools(tools)
    except (FmstackError, TypeError, AttributeError):
        return None
    return tools


def _needs(fmt: str, min_rating: int) -> str:
    if fmt == "sft":
        return f"corrected or rated at least {min_rating:+d}"
    return f"corrected, or liked (rating >= {min_rating}) and disliked answers to the same messages"
