"""`POST /v1/responses`: OpenAI's Responses API (new OpenAI clients default to it) over the same gateway path as
chat completions: text or message input, `instructions`, sampling, structured output, and streaming as typed
server-sent events (`response.created` … `response.output_text.delta` … `response.completed`).

Responses are not stored (`store` is accepted and ignored), so `previous_response_id` is refused with a clear error.
"""

from __future__ import annotations

import functools
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from fmstack.core.errors import FmstackError, InvalidRequest
from fmstack.engines.base import Delta, GenerationRequest
from fmstack.gateway import Call
from fmstack.server import review_api
from fmstack.server.deps import context_of, gateway_of

router = APIRouter(prefix="/v1", tags=["OpenAI-compatible"])


class ResponsesRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    stream: bool = False
    text: dict[str, Any] | None = Field(None, description='{"format": {"type": "json_schema", "schema": ...}}')
    tools: list[dict[str, Any]] | None = None
    previous_response_id: str | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    seed: int | None = None

    def to_generation(self) -> GenerationRequest:
        if self.previous_response_id:
            raise InvalidRequest(
                "previous_response_id is not supported: responses are not stored. Send the conversation in 'input'.",
                param="previous_response_id",
            )
        if self.tools:
            raise InvalidRequest(
                "Tools are not supported on /v1/responses yet; use /v1/chat/completions.", param="tools"
            )
        system = [{"role": "system", "content": self.instructions}] if self.instructions else []
        return GenerationRequest(
            messages=system + _messages(self.input),
            max_tokens=self.max_output_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            response_format=_format(self.text),
        )


def _messages(value: str | list[dict]) -> list[dict]:
    """Input items as chat messages: a string is one user message; items are messages whose content is a string
    or a list of `input_text` / `output_text` parts."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    messages = []
    for i, item in enumerate(value):
        role, content = item.get("role"), item.get("content")
        if item.get("type", "message") != "message" or role not in ("user", "assistant", "system", "developer"):
            raise InvalidRequest(
                f"input[{i}] must be a message with a role user, assistant or system.", param=f"input.{i}"
            )
        if isinstance(content, list):
            texts = [p.get("text") for p in content if p.get("type") in ("input_text", "output_text", "text")]
            if len(texts) != len(content) or not all(isinstance(t, str) for t in texts):
                raise InvalidRequest(f"input[{i}].content: only text parts are supported.", param=f"input.{i}.content")
            content = "".join(texts)
        if not isinstance(content, str):
            raise InvalidRequest(
                f"input[{i}].content must be a string or a list of text parts.", param=f"input.{i}.content"
            )
        messages.append({"role": "system" if role == "developer" else role, "content": content})
    if not messages:
        raise InvalidRequest("'input' must contain at least one message.", param="input")
    return messages


def _format(text: dict | None) -> dict | None:
    """The Responses API's `text.format` as the chat API's `response_format`."""
    fmt = (text or {}).get("format") or {"type": "text"}
    if fmt.get("type") == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": fmt.get("name"), "schema": fmt.get("schema")}}
    return fmt


@router.post("/responses", response_model=None)
async def responses(body: ResponsesRequest, request: Request):
    gateway = gateway_of(request)
    call = gateway.call("responses", "resp", body.model_dump(exclude_none=True), context_of(request))
    try:
        generation = body.to_generation()
    except Exception as exc:
        call.fail(exc)
        raise
    deltas = await gateway.stream(call, body.model, generation)
    # the app's human review policy, as for chat completions: crawl holds the answer for a person
    return await review_api.review(request, call, body, deltas, functools.partial(_respond, call, body))


async def _respond(call: Call, body: ResponsesRequest, deltas: AsyncIterator[Delta], headers: dict | None = None):
    shape = _ResponseShape(call, body)
    headers = _headers(call) | (headers or {})
    if body.stream:
        return StreamingResponse(_events(shape, deltas), media_type="text/event-stream", headers=headers)
    text = "".join([delta.text async for delta in deltas])
    await call.committed()
    return JSONResponse(shape.response(text), headers=headers)


def _headers(call: Call) -> dict:
    return {"X-Fmstack-Trace-Id": call.id, "Cache-Control": "no-cache"}


class _ResponseShape:
    def __init__(self, call: Call, body: ResponsesRequest):
        self.call, self.body = call, body
        self.created = int(time.time())
        self.item_id = f"msg_{uuid.uuid4().hex}"

    def message(self, text: str, status: Literal["in_progress", "completed", "incomplete"]) -> dict:
        content = [{"type": "output_text", "text": text, "annotations": []}] if status != "in_progress" else []
        return {"type": "message", "id": self.item_id, "status": status, "role": "assistant", "content": content}

    def response(self, text: str | None) -> dict:
        """The response object; `text` None while it is still being generated."""
        finish = self.call.finish
        status = (
            "in_progress" if text is None else "incomplete" if finish and finish.reason == "length" else "completed"
        )
        p, c = (finish.prompt_tokens, finish.completion_tokens) if finish and text is not None else (0, 0)
        return {
            "id": self.call.id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "model": self.body.model,
            "output": [] if text is None else [self.message(text, status)],
            "instructions": self.body.instructions,
            "max_output_tokens": self.body.max_output_tokens,
            "temperature": self.body.temperature,
            "top_p": self.body.top_p,
            "text": {"format": (self.body.text or {}).get("format") or {"type": "text"}},
            "tools": [],
            "tool_choice": "auto",
            "parallel_tool_calls": True,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "metadata": self.body.metadata or {},
            "user": self.body.user,
            "usage": None
            if text is None
            else {
                "input_tokens": p,
                "input_tokens_details": {"cached_tokens": finish.cached_tokens if finish else 0},
                "output_tokens": c,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": p + c,
            },
        }


async def _events(shape: _ResponseShape, deltas: AsyncIterator[Delta]) -> AsyncIterator[str]:
    """The typed event sequence OpenAI's SDKs expect, numbered."""
    number = 0

    def event(kind: str, **fields: Any) -> str:
        nonlocal number
        number += 1
        data = {"type": kind, "sequence_number": number - 1} | fields
        return f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"

    part = {"type": "output_text", "text": "", "annotations": []}
    where = {"item_id": shape.item_id, "output_index": 0, "content_index": 0}
    yield event("response.created", response=shape.response(None))
    yield event("response.in_progress", response=shape.response(None))
    yield event("response.output_item.added", output_index=0, item=shape.message("", "in_progress"))
    yield event("response.content_part.added", part=part, **where)
    parts: list[str] = []
    try:
        async for delta in deltas:
            parts.append(delta.text)
            yield event("response.output_text.delta", delta=delta.text, logprobs=[], **where)
    except FmstackError as exc:  # headers are sent: the error is an event, as OpenAI sends it
        yield event("error", code=exc.code, message=exc.message, param=exc.param)
        return
    text = "".join(parts)
    await shape.call.committed()
    done = shape.response(text)
    yield event("response.output_text.done", text=text, logprobs=[], **where)
    yield event("response.content_part.done", part=part | {"text": text}, **where)
    yield event("response.output_item.done", output_index=0, item=done["output"][0])
    yield event("response.completed" if done["status"] == "completed" else "response.incomplete", response=done)
