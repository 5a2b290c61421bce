"""What every route takes from a request: the process's gateway, and the call context the request carries."""

from __future__ import annotations

from fastapi import Request

from fmstack.gateway import CallContext, Gateway


def gateway_of(request: Request) -> Gateway:
    return request.app.state.gateway


def context_of(request: Request, **fields: str | None) -> CallContext:
    """The app from `X-Fmstack-App`, the eval run from `X-Fmstack-Eval-Run` (`fmstack eval run --base-url`);
    `fields` adds what the route knows (a stored prompt, a route's variant)."""
    headers = request.headers
    return CallContext(app=headers.get("x-fmstack-app"), eval_run_id=headers.get("x-fmstack-eval-run"), **fields)
