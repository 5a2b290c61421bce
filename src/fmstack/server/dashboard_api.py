"""The dashboard: its page (`/dashboard`) and the numbers it draws (`/api/dashboard`), per app and per route/variant
over a time range, computed from the store by `fmstack.app.ab.dashboard`."""

from __future__ import annotations

import asyncio
from datetime import datetime

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from fmstack.app.ab import overview
from fmstack.server.deps import gateway_of
from fmstack.server.ui_api import web_page

router = APIRouter(tags=["dashboard"])


@router.get("/dashboard", include_in_schema=False)
async def dashboard_page() -> HTMLResponse:
    return web_page("dashboard")


@router.get("/api/dashboard")
async def dashboard(
    request: Request,
    since: datetime | None = Query(None, description="start of the range (default: 24 hours before `until`)"),
    until: datetime | None = Query(None, description="end of the range (default: now)"),
    app: str | None = Query(None, description="only this app (`X-Fmstack-App`)"),
    route: str | None = Query(None, description="only this A/B route"),
) -> dict:
    """Requests, errors, latency and TTFT percentiles, tokens, cost, thumbs, automated share, review numbers and
    judge scores: in total, per app, per route/variant and per time bucket; with stage and route history."""
    gateway = gateway_of(request)

    def run() -> dict:
        gateway.writer.flush()
        return overview(gateway.sessions, since, until, app, route)

    return await asyncio.to_thread(run)
