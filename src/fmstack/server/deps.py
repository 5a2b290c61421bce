"""What every route takes from a request: the process's gateway, and the call context the request carries."""

from __future__ import annotations

from fastapi import Request

from fmstack.gateway import CallContext, Gateway

LARGEST_INT = 2**53  # the largest whole number a route takes: JSON-safe, and inside every store's INTEGER


def gateway_of(request: Request) -> Gateway:
    return request.app.state.gateway


def context_of(request: Request, **fields: str | None) -> CallContext:
    """The app and key name from the request's API key (`server.auth`) when keys are on — a header could be
    forged — else the app from `X-Fmstack-App`; the eval run from `X-Fmstack-Eval-Run` (`fmstack eval run
    --base-url`); `fields` adds what the route knows (a stored prompt, a route's variant)."""
    headers = request.headers
    key = getattr(request.state, "api_key", None)
    app = key.app if key else headers.get("x-fmstack-app")
    return CallContext(
        app=app, key_name=key.name if key else None, eval_run_id=headers.get("x-fmstack-eval-run"), **fields
    )
