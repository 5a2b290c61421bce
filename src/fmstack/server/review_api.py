"""Human review over HTTP: every answer of an app under a review policy passes through `review` on its way out,
and reviewers work through `/v1/reviews/...` (the `/review` page and `fmstack review` use the same functions).

How a client waits in crawl (no answer reaches a user before a person approves it):

- plain request: the answer is generated, stored as a pending review, and the request waits for the decision up
  to the policy's `hold_seconds`. Approved: the usual chat completion; edited: the same with the reviewer's text;
  rejected: 422 `answer_rejected` with the reviewer's reason; no decision in time: 504 `review_timeout` with
  `x-should-retry: false` (OpenAI clients would otherwise retry and queue the question again) and the status URL
  in `Location`: the answer stays in the queue and the URL gives the decision later;
- streaming: the stream opens at once with `X-Fmstack-Review: pending` (the chat page shows "waiting for review"),
  sends empty keep-alive chunks while it waits, then the approved text, or the error as an in-stream error;
- `Prefer: respond-async`: 202 as soon as the answer is stored, with `Location: /v1/reviews/pending/{id}` to poll
  (202 while pending, then the completion, or the rejection's 422).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field

from fmstack.app.review import PolicySettings, Reviews, move, policy_report
from fmstack.app.review.judge import Answered
from fmstack.app.review.policy import Policy, get_policy, history, list_policies, save_policy
from fmstack.app.review.queue import (
    assign,
    conversation,
    decide,
    final_text,
    get_item,
    held_answer,
    item_dict,
    list_items,
    next_item,
    pending_count,
    wait_for_decision,
)
from fmstack.core.errors import EngineError, FmstackError, InvalidRequest, NotFound, RequestTimeout
from fmstack.core.store.schema import ReviewItem, Trace
from fmstack.engines.base import Delta
from fmstack.gateway import Call
from fmstack.model.train.classify import load_classifier
from fmstack.server.deps import LARGEST_INT, context_of, gateway_of
from fmstack.server.ui_api import web_page

KEEP_ALIVE = 10.0  # seconds between empty chunks while a streamed crawl answer waits for its reviewer
_LOCK = threading.Lock()

router = APIRouter(tags=["fmstack review"])
Send = Callable[..., Awaitable[Response]]  # openai_api's response writer: (events, headers=...) -> Response


class ReviewRejected(FmstackError):
    status = 422
    type = "review_rejected"


def reviews_of(request: Request) -> Reviews:
    """The server's one `Reviews`, made on first use."""
    state = request.app.state
    if getattr(state, "reviews", None) is None:
        with _LOCK:
            if getattr(state, "reviews", None) is None:
                state.reviews = Reviews(state.gateway, load_classifier)
    return state.reviews


# ---------- the hook on every answer ----------


async def review(request: Request, call: Call, body: Any, events: AsyncIterator[Delta], send: Send) -> Response:
    """Send an answer as its app's review policy says: crawl holds it for a person; walk and run deliver it, then
    queue a sample (walk) or have the judge score it (run). Apps without a policy are not touched."""
    reviews = reviews_of(request)
    policy = await reviews.policy(call.row.get("app"))
    if policy is None:
        return await send(events)
    if policy.stage != "crawl":
        return await send(_then(call, events, lambda: reviews.delivered(policy, _answered(call))))
    return await Hold(reviews, policy, call, request).respond(body, events, send)


async def _then(call: Call, events: AsyncIterator[Delta], delivered: Callable[[], None]) -> AsyncIterator[Delta]:
    """The events, then `delivered` once the whole answer went out (not for an answer cut short or failed)."""
    async for delta in events:
        yield delta
    if call.row.get("status") == "ok":
        delivered()


def _answered(call: Call) -> Answered:
    chunks = (call.row.get("retrieval") or {}).get("chunks") or []
    return Answered(call.id, conversation(call.row.get("request")), call.text, [c["text"] for c in chunks] or None)


class Hold:
    """A crawl answer: generated in full, stored as a pending review, released when a person decides."""

    def __init__(self, reviews: Reviews, policy: Policy, call: Call, request: Request):
        self.reviews, self.policy, self.call, self.request = reviews, policy, call, request
        self.url = f"/v1/reviews/pending/{call.id}"
        self.headers = {"X-Fmstack-Trace-Id": call.id, "X-Fmstack-Review": "pending", "X-Fmstack-Review-Url": self.url}

    async def respond(self, body: Any, events: AsyncIterator[Delta], send: Send) -> Response:
        if getattr(body, "n", 1) != 1:
            exc = InvalidRequest("Every answer of an app in crawl is reviewed before delivery: send n = 1.", param="n")
            self.call.fail(exc)
            await events.aclose()
            raise exc
        if body.stream and not _prefers_async(self.request):
            return await send(self._released(events), headers=self.headers)
        await self._store(events)
        if _prefers_async(self.request):
            content = {"id": self.call.id, "object": "review.pending", "status": "pending", "status_url": self.url}
            return JSONResponse(content, status_code=202, headers=self.headers | {"Location": self.url})
        item = await wait_for_decision(
            self.reviews.sessions, self.call.id, self.policy.hold_seconds, gone=self.request.is_disconnected
        )
        if item is None and await self.request.is_disconnected():
            return Response(status_code=499)  # the answer stays in the queue; nobody is listening
        try:
            text = self._decided(item)
        except FmstackError as exc:
            return self._error(exc)
        return await send(_said(text), headers=self.headers | {"X-Fmstack-Review": item.status})

    async def _store(self, events: AsyncIterator[Delta]) -> None:
        """Generate the whole answer (nobody sees it yet) and store it as a pending review."""
        async for _ in events:
            pass
        if self.call.row.get("status") != "ok":
            raise EngineError("The model stopped before finishing its answer; nothing was held for review.")
        await self.reviews.hold(self.policy, _answered(self.call))

    async def _released(self, events: AsyncIterator[Delta]) -> AsyncIterator[Delta]:
        """A streamed crawl answer: keep-alive chunks while a person decides, then the text (or the error)."""
        await self._store(events)
        deadline = asyncio.get_running_loop().time() + self.policy.hold_seconds
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            item = await wait_for_decision(self.reviews.sessions, self.call.id, min(KEEP_ALIVE, left))
            if item is not None:
                yield Delta(self._decided(item), tokens=0)
                return
            yield Delta("", tokens=0)
        self._decided(None)

    def _decided(self, item: ReviewItem | None) -> str:
        """The text a person let through, or the error the client gets."""
        if item is None:
            raise RequestTimeout(
                f"The answer is waiting for human review (app '{self.policy.app}' is in crawl) and was not reviewed "
                f"within {self.policy.hold_seconds:g} s. It stays in the queue: GET {self.url} gives the decision.",
                code="review_timeout",
            )
        if item.status == "rejected":
            raise ReviewRejected(f"A reviewer rejected the answer: {item.reject_reason}", code="answer_rejected")
        return final_text(item) or ""

    def _error(self, exc: FmstackError) -> JSONResponse:
        headers = self.headers | {"x-should-retry": "false", "Location": self.url}
        return JSONResponse(exc.to_body(), status_code=exc.status, headers=headers)


async def _said(text: str) -> AsyncIterator[Delta]:
    yield Delta(text, tokens=0)


def _prefers_async(request: Request) -> bool:
    """RFC 7240: `Prefer: respond-async` (possibly among other preferences)."""
    preferences = request.headers.get("prefer", "")
    return any(p.strip().split("=")[0].lower() == "respond-async" for p in preferences.split(","))


# ---------- crawl clients: the decision on a held answer ----------


@router.get("/v1/reviews/pending/{trace_id}", response_model=None)
async def pending(trace_id: str, request: Request):
    """A held crawl answer: 202 while a person decides, then the chat completion (the reviewer's text when they
    edited it), or 422 when it was rejected."""
    sessions = gateway_of(request).sessions

    def read() -> tuple[ReviewItem | None, Trace | None]:
        with sessions() as session:
            return held_answer(session, trace_id), session.get(Trace, trace_id)

    item, trace = await asyncio.to_thread(read)
    if item is None or trace is None:
        raise NotFound(f"No answer held for review under id '{trace_id}'.")
    headers = {"X-Fmstack-Review": item.status, "X-Fmstack-Trace-Id": trace_id}
    if item.status == "pending":
        content = {"id": trace_id, "object": "review.pending", "status": "pending"}
        return JSONResponse(content, status_code=202, headers=headers | {"Retry-After": "2"})
    if item.status == "rejected":
        exc = ReviewRejected(f"A reviewer rejected the answer: {item.reject_reason}", code="answer_rejected")
        return JSONResponse(exc.to_body(), status_code=exc.status, headers=headers)
    return JSONResponse(_completion(trace, final_text(item) or ""), headers=headers)


def _completion(trace: Trace, text: str) -> dict[str, Any]:
    """The response the client would have had, with the text a person let through, in its endpoint's shape."""
    p, c = trace.prompt_tokens, trace.completion_tokens
    head = {"id": trace.id, "model": trace.model}
    if trace.endpoint == "responses":
        content = [{"type": "output_text", "text": text, "annotations": []}]
        message = {"type": "message", "status": "completed", "role": "assistant", "content": content}
        usage = {"input_tokens": p, "output_tokens": c, "total_tokens": p + c}
        created = {"created_at": int(trace.created_at.timestamp())}
        return head | created | {"object": "response", "status": "completed", "output": [message], "usage": usage}
    if trace.endpoint == "completions":
        name, choice = "text_completion", {"index": 0, "text": text, "logprobs": None}
    else:
        message = {"role": "assistant", "content": text}
        name, choice = "chat.completion", {"index": 0, "message": message, "logprobs": None}
    return head | {
        "object": name,
        "created": int(trace.created_at.timestamp()),
        "system_fingerprint": f"fmstack-{trace.engine}",
        "choices": [choice | {"finish_reason": trace.finish_reason}],
        "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
    }


# ---------- policies ----------


class PolicyBody(PolicySettings):
    stage: str | None = Field(None, description="crawl | walk | run: a new policy's stage (then: move)")


class MoveBody(BaseModel):
    stage: str
    by: str | None = Field(None, max_length=200, description="who moved it (recorded)")
    force: bool = Field(False, description="move on although a bar is not met (recorded as forced)")


@router.get("/v1/reviews/policies")
async def policies(request: Request) -> dict:
    def read() -> list[dict]:
        with gateway_of(request).sessions() as session:
            return [p.to_dict() for p in list_policies(session)]

    return {"object": "list", "data": await asyncio.to_thread(read)}


@router.get("/v1/reviews/policies/{app}")
async def policy(app: str, request: Request) -> dict:
    """The policy, each stage's numbers (approval rate, edit distance, kappa, volume, time) and its bars."""
    return await _in_store(request, lambda session: policy_report(session, app).to_dict())


@router.put("/v1/reviews/policies/{app}")
async def put_policy(app: str, body: PolicyBody, request: Request) -> dict:
    """Create the app's policy or change its settings (its stage changes only by a move)."""
    registry = gateway_of(request).registry
    settings = PolicySettings(**body.model_dump(exclude={"stage"}, exclude_unset=True))

    def save(session) -> dict:
        save_policy(session, registry, app, settings, body.stage)
        return policy_report(session, app).to_dict()

    return await _changed(request, save)


@router.post("/v1/reviews/policies/{app}/move")
async def move_policy(app: str, body: MoveBody, request: Request) -> dict:
    """Move the app one stage on (when its numbers meet the bars, or with `force`) or back; recorded."""
    by = body.by or context_of(request).key_name
    return await _changed(request, lambda session: move(session, app, body.stage, by, body.force).to_dict())


@router.get("/v1/reviews/policies/{app}/history")
async def policy_history(app: str, request: Request) -> dict:
    return {"object": "list", "data": await _in_store(request, lambda session: history(session, app))}


async def _changed(request: Request, change: Callable) -> Any:
    result = await _in_store(request, change, write=True)
    reviews_of(request).changed()
    return result


async def _in_store(request: Request, work: Callable, write: bool = False) -> Any:
    """Run `work(session)` off the event loop, in one transaction when it writes (nothing half-written)."""
    gateway = gateway_of(request)

    def run() -> Any:
        gateway.writer.flush()  # traces the work may refer to
        with gateway.sessions.begin() if write else gateway.sessions() as session:
            return work(session)

    return await asyncio.to_thread(run)


# ---------- the queue ----------


REVIEWER = Field(None, max_length=200, description="who reviews (default: the API key's name)")
ITEM_ID = PathParam(ge=1, le=LARGEST_INT, description="the review item's id")


class NextBody(BaseModel):
    reviewer: str | None = REVIEWER
    app: str | None = Field(None, max_length=200)


class DecisionBody(BaseModel):
    reviewer: str | None = REVIEWER
    text: str | None = Field(None, description="edit: the corrected answer")
    reason: str | None = Field(None, description="reject: why (the user is told)")
    seconds: float | None = Field(None, ge=0, lt=86_400, description="time spent (default: since it was opened)")


class AssignBody(BaseModel):
    assignee: str | None = Field(None, max_length=200)


@router.get("/v1/reviews/items")
async def items(
    request: Request,
    app: str | None = None,
    status: str | None = None,
    reason: str | None = None,
    limit: int = Query(50, ge=1, le=1000),
) -> dict:
    def read(session) -> list[dict]:
        if app is not None:
            get_policy(session, app)
        return [item_dict(i) for i in list_items(session, app=app, status=status, reason=reason, limit=limit)]

    return {"object": "list", "data": await _in_store(request, read)}


@router.get("/v1/reviews/items/{item_id}")
async def item(request: Request, item_id: int = ITEM_ID) -> dict:
    return await _in_store(request, lambda session: _detail(session, get_item(session, item_id)))


@router.post("/v1/reviews/next")
async def next_(body: NextBody, request: Request) -> dict:
    """The next item for the reviewer, opened by them (others are not offered it for a while)."""
    reviewer = _reviewer(request, body.reviewer)

    def take(session) -> dict:
        if body.app:
            get_policy(session, body.app)
        found = next_item(session, reviewer, body.app)
        pending = pending_count(session, body.app)
        return {"object": "review.next", "item": _detail(session, found) if found else None, "pending": pending}

    return await _in_store(request, take, write=True)


@router.post("/v1/reviews/items/{item_id}/assignee")
async def assignee(body: AssignBody, request: Request, item_id: int = ITEM_ID) -> dict:
    return await _in_store(request, lambda session: item_dict(assign(session, item_id, body.assignee)), write=True)


@router.post("/v1/reviews/items/{item_id}/{action}")
async def decision(action: str, body: DecisionBody, request: Request, item_id: int = ITEM_ID) -> dict:
    """approve, edit (`text`: the correction), reject (`reason`) or skip; 409 if someone decided first."""
    reviewer = _reviewer(request, body.reviewer)

    def apply(session) -> dict:
        found = decide(session, item_id, action, reviewer, text=body.text, reason=body.reason, seconds=body.seconds)
        return item_dict(found)

    return await _in_store(request, apply, write=True)


def _detail(session, found: ReviewItem) -> dict:
    trace = session.get(Trace, found.trace_id)
    return item_dict(found, trace, get_policy(session, found.app))


def _reviewer(request: Request, given: str | None) -> str:
    """Who is reviewing: as given, else the API key's name."""
    return (given or "").strip() or context_of(request).key_name or ""


# ---------- the page ----------


@router.get("/review", include_in_schema=False)
async def review_page() -> HTMLResponse:
    return web_page("review")
