"""`POST /v1/responses`: OpenAI's Responses API (new OpenAI clients default to it) over the same gateway path as
chat completions: text or message input, `instructions`, sampling, structured output, function tools, and
streaming as typed server-sent events (`response.created` … `response.output_text.delta` … `response.completed`).

Tools take the Responses shape (`{"type": "function", "name", "parameters"}`) and become chat tools, so calls are
prompted, grammar-constrained and parsed exactly as on `/v1/chat/completions` (engines/tools.py). A call is an
output item of type `function_call`; the caller runs it and sends the call and a `function_call_output` item back
in `input`. Streamed, a call is `response.output_item.added`, `response.function_call_arguments.delta` and
`.done`, then `response.output_item.done`, as OpenAI sends them.

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
from fmstack.engines import tools as toolkit
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
    tools: list[dict[str, Any]] | None = Field(None, description='[{"type": "function", "name": …, "parameters": …}]')
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool = True
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
        system = [{"role": "system", "content": self.instructions}] if self.instructions else []
        return GenerationRequest(
            messages=system + _messages(self.input),
            max_tokens=self.max_output_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            response_format=_format(self.text),
            tools=_tools(self.tools),
            tool_choice=_tool_choice(self.tool_choice),
            parallel_tool_calls=self.parallel_tool_calls,
        )

    @property
    def with_tools(self) -> bool:
        """Whether the answer may hold calls (then they are parsed out of the text)."""
        return bool(self.tools) and self.tool_choice != "none"


def _tools(tools: list[dict] | None) -> list[dict] | None:
    """Responses function tools as chat tools, checked here so a 400 names the field as the caller wrote it."""
    if not tools:
        return None
    chat = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise InvalidRequest(
                f"Only function tools are supported ({{'type': 'function', 'name': …}}), not {kind!r}.",
                param=f"tools.{i}",
            )
        function = {k: tool[k] for k in ("name", "description", "parameters") if tool.get(k) is not None}
        chat.append({"type": "function", "function": function})
    try:
        toolkit.check_tools(chat)
    except InvalidRequest as exc:
        raise InvalidRequest(exc.message, param=(exc.param or "tools").replace(".function.", ".")) from None
    return chat


def _tool_choice(choice: str | dict | None) -> str | dict | None:
    """`{"type": "function", "name": …}` as the chat API's `{"type": "function", "function": {"name": …}}`."""
    if not isinstance(choice, dict):
        return choice
    if choice.get("type") != "function" or not isinstance(choice.get("name"), str):
        raise InvalidRequest(
            "tool_choice must be none, auto, required or {'type': 'function', 'name': …}.", param="tool_choice"
        )
    return {"type": "function", "function": {"name": choice["name"]}}


def _messages(value: str | list[dict]) -> list[dict]:
    """Input items as chat messages: a string is one user message; items are messages whose content is a string
    or a list of `input_text` / `output_text` parts, `function_call` items (an assistant's calls, several in a
    row being one turn) and `function_call_output` items (a tool's result)."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    messages: list[dict] = []
    for i, item in enumerate(value):
        kind = item.get("type", "message")
        if kind == "function_call":
            _add_call(messages, item, i)
            continue
        if kind == "function_call_output":
            result = _content(item.get("output"), i, "output")
            messages.append({"role": "tool", "tool_call_id": _text(item, "call_id", i), "content": result})
            continue
        role = item.get("role")
        if kind != "message" or role not in ("user", "assistant", "system", "developer"):
            raise InvalidRequest(
                f"input[{i}] must be a message with a role user, assistant or system, a function_call or a "
                "function_call_output.",
                param=f"input.{i}",
            )
        content = _content(item.get("content"), i, "content")
        messages.append({"role": "system" if role == "developer" else role, "content": content})
    if not messages:
        raise InvalidRequest("'input' must contain at least one message.", param="input")
    return messages


def _content(content: Any, i: int, field: str) -> str:
    if isinstance(content, list):
        texts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") in _TEXT_PARTS]
        if len(texts) != len(content) or not all(isinstance(t, str) for t in texts):
            raise InvalidRequest(f"input[{i}].{field}: only text parts are supported.", param=f"input.{i}.{field}")
        content = "".join(texts)
    if not isinstance(content, str):
        raise InvalidRequest(
            f"input[{i}].{field} must be a string or a list of text parts.", param=f"input.{i}.{field}"
        )
    return content


_TEXT_PARTS = ("input_text", "output_text", "text")


def _text(item: dict, field: str, i: int) -> str:
    value = item.get(field)
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"input[{i}].{field} must be a non-empty string.", param=f"input.{i}.{field}")
    return value


def _add_call(messages: list[dict], item: dict, i: int) -> None:
    """A `function_call` item as a tool call of the assistant turn it belongs to (the one just before, when the
    model wrote text or other calls first)."""
    arguments = item.get("arguments", "{}")
    if not isinstance(arguments, str):
        raise InvalidRequest(f"input[{i}].arguments must be a JSON string.", param=f"input.{i}.arguments")
    call = {
        "id": _text(item, "call_id", i),
        "type": "function",
        "function": {"name": _text(item, "name", i), "arguments": arguments},
    }
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant":
        last.setdefault("tool_calls", []).append(call)
    else:
        messages.append({"role": "assistant", "content": "", "tool_calls": [call]})


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
    content, calls = shape.split(text)
    return JSONResponse(shape.response(shape.output(content, calls)), headers=headers)


def _headers(call: Call) -> dict:
    return {"X-Fmstack-Trace-Id": call.id, "Cache-Control": "no-cache"}


class _ResponseShape:
    def __init__(self, call: Call, body: ResponsesRequest):
        self.call, self.body = call, body
        self.created = int(time.time())
        self.item_id = f"msg_{uuid.uuid4().hex}"

    def split(self, text: str) -> tuple[str, list[dict]]:
        """(the answer's text, its tool calls in the chat API's shape)."""
        return toolkit.parse(text) if self.body.with_tools else (text, [])

    def status(self) -> Literal["completed", "incomplete"]:
        """Cut short by max_output_tokens is incomplete, whole calls made before the cut or not (a call cut off is
        dropped; the chat API says finish_reason "length" too), so an agent knows a call may be missing."""
        finish = self.call.finish
        return "incomplete" if finish and finish.reason == "length" else "completed"

    def message(self, text: str, status: Literal["in_progress", "completed", "incomplete"]) -> dict:
        content = [{"type": "output_text", "text": text, "annotations": []}] if status != "in_progress" else []
        return {"type": "message", "id": self.item_id, "status": status, "role": "assistant", "content": content}

    @staticmethod
    def function_call(call: dict, status: Literal["in_progress", "completed"]) -> dict:
        """A chat API tool call as a Responses `function_call` output item (its arguments empty while in
        progress: they follow as deltas)."""
        return {
            "type": "function_call",
            "id": f"fc_{call['id'].removeprefix('call_')}",
            "call_id": call["id"],
            "name": call["function"]["name"],
            "arguments": call["function"]["arguments"] if status == "completed" else "",
            "status": status,
        }

    def output(self, content: str, calls: list[dict]) -> list[dict]:
        """The output items: the message (when there is text, or nothing else), then one item per call."""
        message = [self.message(content, self.status())] if content or not calls else []
        return message + [self.function_call(c, "completed") for c in calls]

    def response(self, output: list[dict] | None) -> dict:
        """The response object; `output` None while it is still being generated."""
        finish = self.call.finish
        status = "in_progress" if output is None else self.status()
        p, c = (finish.prompt_tokens, finish.completion_tokens) if finish and output is not None else (0, 0)
        return {
            "id": self.call.id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "model": self.body.model,
            "output": output or [],
            "instructions": self.body.instructions,
            "max_output_tokens": self.body.max_output_tokens,
            "temperature": self.body.temperature,
            "top_p": self.body.top_p,
            "text": {"format": (self.body.text or {}).get("format") or {"type": "text"}},
            "tools": self.body.tools or [],
            "tool_choice": self.body.tool_choice or "auto",
            "parallel_tool_calls": self.body.parallel_tool_calls,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "metadata": self.body.metadata or {},
            "user": self.body.user,
            "usage": None
            if output is None
            else {
                "input_tokens": p,
                "input_tokens_details": {"cached_tokens": finish.cached_tokens if finish else 0},
                "output_tokens": c,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": p + c,
            },
        }


async def _events(shape: _ResponseShape, deltas: AsyncIterator[Delta]) -> AsyncIterator[str]:
    """The typed event sequence OpenAI's SDKs expect, numbered. Without tools the message item opens at once;
    with tools, text that may start a call is held back (`ToolStream`), the message opens at its first shown
    text, and the calls follow it as `function_call` items once the answer is complete."""
    number = 0

    def event(kind: str, **fields: Any) -> str:
        nonlocal number
        number += 1
        data = {"type": kind, "sequence_number": number - 1} | fields
        return f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"

    part = {"type": "output_text", "text": "", "annotations": []}
    where = {"item_id": shape.item_id, "output_index": 0, "content_index": 0}
    opened = False

    def open_message() -> list[str]:
        nonlocal opened
        opened = True
        return [
            event("response.output_item.added", output_index=0, item=shape.message("", "in_progress")),
            event("response.content_part.added", part=part, **where),
        ]

    yield event("response.created", response=shape.response(None))
    yield event("response.in_progress", response=shape.response(None))
    calls_stream = toolkit.ToolStream() if shape.body.with_tools else None
    if calls_stream is None:
        for line in open_message():
            yield line
    parts: list[str] = []
    calls: list[dict] = []
    try:
        async for delta in deltas:
            piece = calls_stream.push(delta.text) if calls_stream else delta.text
            if not piece and calls_stream:
                continue  # held back: it may be the start of a call
            if not opened:
                for line in open_message():
                    yield line
            parts.append(piece)
            yield event("response.output_text.delta", delta=piece, logprobs=[], **where)
        if calls_stream:
            rest, calls = calls_stream.finish()
            if rest or (not opened and not calls):
                if not opened:
                    for line in open_message():
                        yield line
                parts.append(rest)
                if rest:
                    yield event("response.output_text.delta", delta=rest, logprobs=[], **where)
    except FmstackError as exc:  # headers are sent: the error is an event, as OpenAI sends it
        yield event("error", code=exc.code, message=exc.message, param=exc.param)
        return
    text = "".join(parts)
    await shape.call.committed()
    output: list[dict] = []
    if opened:
        message = shape.message(text, shape.status())
        output.append(message)
        yield event("response.output_text.done", text=text, logprobs=[], **where)
        yield event("response.content_part.done", part=part | {"text": text}, **where)
        yield event("response.output_item.done", output_index=0, item=message)
    for call in calls:
        index, item = len(output), shape.function_call(call, "completed")
        at = {"item_id": item["id"], "output_index": index}
        yield event("response.output_item.added", output_index=index, item=shape.function_call(call, "in_progress"))
        yield event("response.function_call_arguments.delta", delta=item["arguments"], **at)
        yield event("response.function_call_arguments.done", arguments=item["arguments"], name=item["name"], **at)
        yield event("response.output_item.done", output_index=index, item=item)
        output.append(item)
    done = shape.response(output)
    yield event("response.completed" if done["status"] == "completed" else "response.incomplete", response=done)
