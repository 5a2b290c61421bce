"""The web UI: its pages (chat, traces), the navigation every page shares, and the JSON it reads traces from."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime
from pathlib import Path

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, HTMLResponse

from fmstack.app.prompts import PromptStore
from fmstack.core.store.traces import get_trace, list_traces, trace_dict
from fmstack.server.deps import LARGEST_INT, gateway_of

WEB = Path(__file__).with_name("web")
router = APIRouter(tags=["web UI"])
# every page, in the order of the navigation at the top of each: (name, path, title); a new page joins here
PAGES = (
    ("chat", "/", "Chat"),
    ("traces", "/traces", "Traces"),
    ("prompts", "/prompts", "Prompts"),
    ("review", "/review", "Review"),
    ("dashboard", "/dashboard", "Dashboard"),
)
NAV_MARK = re.compile(r"<!-- fmstack:nav[^>]*-->")


def nav(current: str) -> str:
    """The links to every page, the current one marked (`aria-current`), each with `#NAME-link` for tests."""
    links = "".join(
        f'\n      <a href="{path}" id="{name}-link" data-testid="{name}-link"'
        + (' aria-current="page"' if name == current else "")
        + f">{title}</a>"
        for name, path, title in PAGES
    )
    return f'<nav aria-label="fmstack pages" data-testid="nav">{links}\n    </nav>'


def web_page(name: str) -> HTMLResponse:
    """A page of `web/` with the shared navigation in place of its `<!-- fmstack:nav -->` mark."""
    html = (WEB / f"{name}.html").read_text(encoding="utf-8")
    return HTMLResponse(NAV_MARK.sub(lambda _: nav(name), html, count=1))


@router.get("/", include_in_schema=False)
async def chat_page() -> HTMLResponse:
    return web_page("chat")


@router.get("/traces", include_in_schema=False)
async def traces_page() -> HTMLResponse:
    return web_page("traces")


@router.get("/static/{name}", include_in_schema=False)
async def static(name: str) -> FileResponse:
    path = (WEB / name).resolve()
    if path.parent != WEB or not path.is_file():
        from fastapi import HTTPException

        raise HTTPException(404, f"No static file '{name}'.")
    return FileResponse(path)


@router.get("/api/traces")
async def api_traces(
    request: Request,
    limit: int = Query(50, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=LARGEST_INT),
    model: str | None = None,
    app: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    prompt: str | None = Query(None, description="a stored prompt: `name` (any version), `name@3`, `name@production`"),
) -> dict:
    """Recent traces, newest first, with their feedback."""
    gateway = gateway_of(request)

    def query() -> dict:
        gateway.writer.flush()
        name, version = PromptStore(gateway.sessions).trace_filter(prompt)
        with gateway.sessions() as session:
            rows = list_traces(
                session,
                limit=limit,
                offset=offset,
                model=model,
                app=app,
                status=status,
                since=since,
                prompt_name=name,
                prompt_version=version,
            )
            return {"object": "list", "data": [trace_dict(t) for t in rows]}

    return await asyncio.to_thread(query)


@router.get("/api/traces/{trace_id}")
async def api_trace(trace_id: str, request: Request) -> dict:
    gateway = gateway_of(request)

    def query() -> dict:
        gateway.writer.flush()
        with gateway.sessions() as session:
            return trace_dict(get_trace(session, trace_id))

    return await asyncio.to_thread(query)
