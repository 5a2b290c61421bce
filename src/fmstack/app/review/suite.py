"""An eval suite from what people accepted (`fmstack eval suite from-reviews APP -o suite.yaml`): each approved or
edited answer of the app becomes a case whose reference is the text a reviewer let through, so a gate on the
suite tests a new model or prompt against human-accepted answers."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from fmstack.app.eval.suite import load_suite
from fmstack.app.review.policy import get_policy
from fmstack.app.review.queue import final_text
from fmstack.core.errors import FmstackError
from fmstack.core.store.schema import ReviewItem, Trace

CHAT_ENDPOINTS = ("chat.completions", "prompts.chat.completions")  # requests that hold the messages answered


@dataclass
class SuiteExport:
    path: Path
    cases: int
    skipped: Counter = field(default_factory=Counter)


def suite_from_reviews(session: Session, app: str, out: Path, name: str | None = None) -> SuiteExport:
    """Write the suite (atomically, checked by loading it back) and say what went in and what was left out."""
    policy = get_policy(session, app)
    query = (
        select(ReviewItem, Trace)
        .join(Trace, Trace.id == ReviewItem.trace_id)
        .where(ReviewItem.app == app, ReviewItem.copy == 0, ReviewItem.status.in_(("approved", "edited")))
        .order_by(ReviewItem.id)
    )
    cases, skipped = [], Counter()
    for item, trace in session.execute(query):
        messages = (trace.request or {}).get("messages")
        if trace.endpoint not in CHAT_ENDPOINTS or not messages:
            skipped[_why_not(trace.endpoint)] += 1
            continue
        cases.append(
            {
                "id": trace.id,
                "messages": messages,
                "reference": final_text(item),
                "metadata": {"review": item.id, "status": item.status, "reviewer": item.reviewer},
            }
        )
    if not cases:
        raise FmstackError(
            f"No approved or edited chat answers of '{app}' to make cases of; review some first (fmstack review next)."
        )
    spec = {
        "name": name or f"reviews-{app}",
        "description": f"Answers of {app} that reviewers approved or edited; the reference is what they accepted.",
        "metrics": ["token_f1", *(["correctness"] if policy.judge_model else [])],
        **({"judge": {"model": policy.judge_model}} if policy.judge_model else {}),
        "cases": cases,
    }
    _write_checked(out, spec)
    return SuiteExport(out, len(cases), skipped)


def _why_not(endpoint: str) -> str:
    if endpoint.startswith("rag."):
        return "RAG answer (the grounded prompt is not stored)"
    return "not a chat request"


def _write_checked(out: Path, spec: dict) -> None:
    """Write beside `out`, load it as `fmstack eval run` would, then move it into place: never a broken suite."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.yaml")
    tmp.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True, width=120))
    try:
        load_suite(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, out)
