"""A/B routes over HTTP (admin scope when keys are on): list, create, change the split, promote (optionally gated on
the report), roll back, delete, and the report. Every change is recorded with the key's name, and the server's
router reloads at once (another process's changes reach it within a second)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from fmstack.app.ab import RouteInfo, RouteStore, build_report, promote
from fmstack.app.ab.gate import MIN_REQUESTS
from fmstack.core.errors import InvalidRequest
from fmstack.server.deps import context_of, gateway_of

router = APIRouter(prefix="/api/ab", tags=["A/B routes"])


class VariantWeight(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(None, description="a chat model in the registry (a model route's variant)")
    prompt: str | None = Field(
        None, description="a prompt route's variant: a version or alias of the route's prompt, e.g. capitals@2"
    )
    weight: int = Field(ge=0, le=100, description="percent of the route's requests; a route's weights sum to 100")


class RouteCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(
        description="the public name clients send as `model` (a model's own name, or a new one), or a stored "
        "prompt's alias, NAME@ALIAS, that clients complete through /v1/prompts/{ref}/chat/completions"
    )
    variants: list[VariantWeight]


class Split(BaseModel):
    model_config = ConfigDict(extra="forbid")
    variants: list[VariantWeight] = Field(description="the new weights; variants left out get 0")


class Promotion(BaseModel):
    model_config = ConfigDict(extra="forbid")
    variant: str
    gate: bool = Field(False, description="refuse unless the report supports it (409 with the reasons)")
    min_requests: int = Field(MIN_REQUESTS, ge=1, description="answered requests each side needs for the gate")
    since: datetime | None = Field(None, description="the gate's report covers traces from then on")


def _routes(request: Request) -> RouteStore:
    gateway = gateway_of(request)
    return RouteStore(gateway.sessions, gateway.registry)


def _weights(variants: list[VariantWeight]) -> dict[str, int]:
    for i, v in enumerate(variants):
        if (v.model is None) == (v.prompt is None):
            raise InvalidRequest(
                f"variants.{i}: give either `model` (a model route) or `prompt` (a prompt route).",
                param=f"variants.{i}",
            )
    weights = {v.prompt or v.model or "": v.weight for v in variants}
    if len(weights) < len(variants):
        raise InvalidRequest("variants: each model may appear once.", param="variants")
    return weights


async def _change(request: Request, fn, *args) -> dict[str, Any]:
    """Run a change with the caller's key name as its actor, then let the router see it at once."""
    route: RouteInfo = await asyncio.to_thread(fn, *args, context_of(request).key_name)
    gateway_of(request).router.invalidate()
    return _route_dict(route)


def _route_dict(route: RouteInfo) -> dict[str, Any]:
    return {"object": "ab.route", "name": route.name, "split": route.split} | {
        "created_at": route.created_at.isoformat(),
        "updated_at": route.updated_at.isoformat(),
        "variants": [vars(v) for v in route.variants],
    }


@router.get("/routes")
async def list_routes(request: Request) -> dict:
    """Every route with its variants and their weights."""
    routes = await asyncio.to_thread(_routes(request).list)
    return {"object": "list", "data": [_route_dict(r) for r in routes]}


@router.post("/routes", status_code=201)
async def create_route(body: RouteCreate, request: Request) -> dict:
    """A new route: requests for `name` are split between the variants by weight (sticky by `user`)."""
    return await _change(request, _routes(request).create, body.name, _weights(body.variants))


@router.get("/routes/{name}")
async def get_route(name: str, request: Request) -> dict:
    """A route and every change of its split, oldest first."""
    routes = _routes(request)
    route = await asyncio.to_thread(routes.get, name)
    history = await asyncio.to_thread(routes.history, name)
    return _route_dict(route) | {"history": [vars(c) for c in history]}


@router.put("/routes/{name}/split")
async def split_route(name: str, body: Split, request: Request) -> dict:
    """New weights (a variant not in the route joins it; one left out gets 0)."""
    return await _change(request, _routes(request).split, name, _weights(body.variants))


@router.post("/routes/{name}/promote")
async def promote_route(name: str, body: Promotion, request: Request) -> dict:
    """All traffic to one variant; with `gate`, only if the report supports it."""
    routes = _routes(request)
    actor = context_of(request).key_name
    route = await asyncio.to_thread(
        promote, routes, name, body.variant, actor, body.gate, body.min_requests, body.since
    )
    gateway_of(request).router.invalidate()
    return _route_dict(route)


@router.post("/routes/{name}/rollback")
async def rollback_route(name: str, request: Request) -> dict:
    """Undo the latest split or promotion not yet undone."""
    return await _change(request, _routes(request).rollback, name)


@router.delete("/routes/{name}")
async def delete_route(name: str, request: Request) -> dict:
    """Stop routing `name`; its history and its traces stay."""
    await asyncio.to_thread(_routes(request).delete, name, context_of(request).key_name)
    gateway_of(request).router.invalidate()
    return {"object": "ab.route", "name": name, "deleted": True}


@router.get("/routes/{name}/report")
async def report(
    name: str,
    request: Request,
    since: datetime | None = None,
    until: datetime | None = None,
    baseline: str | None = None,
) -> dict:
    """The variants compared on the route's traces, with bootstrap intervals and a verdict per variant."""
    gateway = gateway_of(request)

    def run() -> dict:
        gateway.writer.flush()
        route = _routes(request).get(name)
        return build_report(gateway.sessions, route, since, until, baseline).to_dict()

    return await asyncio.to_thread(run)
