"""Versioned prompts over HTTP: list, save (a new version), read, alias, render, diff, per-version stats, the
prompts page, and chat completions through a stored prompt (`POST /v1/prompts/{ref}/chat/completions`), answered
exactly as /v1/chat/completions answers (streaming included) and traced with the prompt's name and version."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fmstack.app.prompts import PromptContent, PromptStore, diff_prompts
from fmstack.core.errors import InvalidRequest
from fmstack.core.store.traces import prompt_stats
from fmstack.server.deps import context_of, gateway_of
from fmstack.server.openai_api import chat_response
from fmstack.server.schemas import ChatCompletionRequest
from fmstack.server.ui_api import web_page

router = APIRouter(tags=["prompts"])


class PromptSave(BaseModel):
    """A new version of a prompt (the first one creates the prompt)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    system: str | None = Field(None, description="Jinja2 template of the system message")
    user: str | None = Field(None, description="Jinja2 template of the user message")
    examples: list[dict[str, Any]] = Field(default_factory=list, description="few-shot [{user, assistant}] pairs")
    params: dict[str, Any] = Field(default_factory=dict, description="model, temperature, max_tokens, top_p…")
    note: str | None = Field(None, description="what changed")


class AliasMoveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int | str = Field(description="a version number, 'v3', 'latest' or another alias")


class RenderRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    variables: dict[str, Any] = Field(default_factory=dict)


class PromptCompletionRequest(BaseModel):
    """The prompt's variables, plus any chat-completions parameter (they override the version's)."""

    model_config = ConfigDict(extra="allow")
    variables: dict[str, Any] = Field(default_factory=dict)
    model: str | None = Field(None, description="overrides the model stored with the version")
    messages: list[dict[str, Any]] | None = Field(None, description="more turns, sent after the rendered ones")
    stream: bool = False


def _store(request: Request) -> PromptStore:
    return PromptStore(gateway_of(request).sessions)


async def _run(fn, *args):
    return await asyncio.to_thread(fn, *args)


@router.get("/prompts", include_in_schema=False)
async def prompts_page() -> HTMLResponse:
    return web_page("prompts")


@router.get("/v1/prompts")
async def list_prompts(request: Request) -> dict:
    """Every prompt: latest version, number of versions, aliases."""
    rows = await _run(_store(request).list)
    return {"object": "list", "data": [r.to_dict() for r in rows]}


@router.post("/v1/prompts", status_code=201)
async def save_prompt(body: PromptSave, request: Request):
    """Save a new version. Identical to the latest version: nothing is stored (200, `created: false`)."""
    content = PromptContent.build(body.model_dump(exclude={"name", "note"}), body.name)
    saved = await _run(_store(request).save, body.name, content, body.note)
    p = saved.prompt
    message = (
        f"created {p.label}"
        if saved.created
        else f"unchanged: identical to the latest version {p.label}; no new version was stored"
    )
    data = p.to_dict() | {"created": saved.created, "message": message}
    return JSONResponse(data, status_code=201 if saved.created else 200)


@router.get("/v1/prompts/{name}")
async def get_prompt(name: str, request: Request) -> dict:
    """A prompt's versions (oldest first), its aliases and every alias move."""
    store = _store(request)

    def read() -> dict:
        versions = store.versions(name)
        return {
            "object": "prompt",
            "name": name,
            "latest_version": versions[-1].version,
            "aliases": store.aliases(name),
            "versions": [v.to_dict() for v in versions],
            "alias_moves": [m.to_dict() for m in store.moves(name)],
        }

    return await _run(read)


@router.get("/v1/prompts/{name}/versions/{target}")
async def get_version(name: str, target: str, request: Request) -> dict:
    """One version, by number (`3` or `v3`), `latest` or alias."""
    return (await _run(_store(request).get, f"{name}@{target}")).to_dict()


@router.put("/v1/prompts/{name}/aliases/{alias}")
async def move_alias(name: str, alias: str, body: AliasMoveRequest, request: Request) -> dict:
    """Point an alias at a version (rollback: point it back). Every move is recorded."""
    move = await _run(_store(request).set_alias, name, alias, body.version)
    return {"object": "prompt.alias"} | move.to_dict() | {"moved": move.moved}


@router.get("/v1/prompts/{name}/diff")
async def diff(name: str, request: Request, a: str = Query(...), b: str = Query(...)) -> dict:
    """Unified diff of two versions' parts and parameters; `a` and `b` are versions or aliases."""
    store = _store(request)

    def run() -> dict:
        pa, pb = store.get(f"{name}@{a}"), store.get(f"{name}@{b}")
        return {"object": "prompt.diff", "a": pa.label, "b": pb.label, "diff": diff_prompts(pa, pb)}

    return await _run(run)


@router.post("/v1/prompts/{ref}/render")
async def render(ref: str, body: RenderRequest, request: Request) -> dict:
    """The messages a version gives with these variables (a missing variable is a 400 naming it)."""
    prompt = await _run(_store(request).get, ref)
    return {"object": "prompt.render", "ref": prompt.label, "messages": prompt.render(body.variables)} | {
        "params": prompt.params
    }


@router.get("/v1/prompts/{name}/stats")
async def stats(name: str, request: Request) -> dict:
    """Per version: requests, errors, mean latency and TTFT, mean tokens, cost, thumbs up/down (from traces)."""
    gateway = gateway_of(request)

    def query() -> dict:
        gateway.writer.flush()
        with gateway.sessions() as session:
            return {"object": "list", "name": name, "data": prompt_stats(session, name)}

    return await _run(query)


@router.post("/v1/prompts/{ref}/chat/completions", response_model=None)
async def prompt_chat_completions(ref: str, body: PromptCompletionRequest, request: Request):
    """Render the prompt with `variables` and answer like /v1/chat/completions; the trace records the prompt. A
    reference that is an A/B prompt route (`capitals@production` split between versions) renders the version its
    `user` is assigned (sticky), and the trace records the route and the variant."""
    gateway = gateway_of(request)
    sent = body.model_dump(exclude_unset=True, exclude={"variables", "messages"})
    overrides = {k: v for k, v in sent.items() if v is not None}  # `"model": null` keeps the version's model
    variables = body.variables
    params = {"prompt_ref": ref, "variables": variables, **overrides}
    call = gateway.call("prompts.chat.completions", "chatcmpl", params, context_of(request))
    try:
        if picked := await _run(gateway.router.prompt_variant, ref, call.row.get("user")):
            route, variant = picked  # `ref` is a prompt route (an alias split between versions): its variant's
            call.row.update(route=route, variant=variant.name)  # version answers, and its model is not routed again
            ref = variant.prompt or variant.name
        prompt = await _run(PromptStore(gateway.sessions).get, ref)
        call.row.update(prompt_name=prompt.name, prompt_version=str(prompt.version))
        messages = prompt.render(variables) + list(body.messages or [])
        merged = prompt.params | overrides | {"messages": messages}
        if not merged.get("model"):
            raise InvalidRequest(
                f"Prompt '{prompt.label}' names no model: send 'model', or save one in the prompt's params.",
                param="model",
            )
        chat = _chat_request(merged)
        call.row.update(
            model=chat.model[:200],
            request=chat.model_dump(exclude_none=True) | {"prompt_ref": prompt.label, "variables": variables},
        )
    except Exception as exc:
        call.fail(exc)
        raise
    response = await chat_response(call, chat, request)
    response.headers["X-Fmstack-Prompt"] = prompt.label
    return response


def _chat_request(data: dict) -> ChatCompletionRequest:
    try:
        return ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first.get("loc", ())) or None
        raise InvalidRequest(f"Invalid value for '{param}': {first.get('msg')}.", param=param) from None
