"""The fmstack server: one FastAPI app with the OpenAI-compatible API, the web UI, /metrics and /healthz."""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from fmstack import __version__
from fmstack.core.config import Settings, get_settings
from fmstack.core.errors import FmstackError
from fmstack.core.keys import KeyStore
from fmstack.gateway import Gateway
from fmstack.server import (
    ab_api,
    dashboard_api,
    keys_api,
    openai_api,
    prompts_api,
    rag_api,
    responses_api,
    review_api,
    ui_api,
)
from fmstack.server.auth import Auth
from fmstack.server.deps import context_of
from fmstack.server.limits import BodyLimit
from fmstack.server.request_id import RequestId


def create_app(settings: Settings | None = None, preload: list[str] | None = None) -> FastAPI:
    """Build the app; `preload` names models to load at start-up instead of on their first request."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        for name in preload or []:
            await asyncio.to_thread(gateway.pool.get, name)
        yield
        gateway.close()

    gateway = Gateway.open(settings)

    app = FastAPI(
        title="fmstack",
        version=__version__,
        description="OpenAI-compatible API over local and remote models, with traces, feedback and metrics.",
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, on_reject=_trace_rejected(gateway))
    app.add_middleware(Auth, keys=KeyStore(gateway.sessions))  # inside RequestId: refusals get an id too
    app.add_middleware(RequestId)
    app.include_router(openai_api.router)
    app.include_router(responses_api.router)
    app.include_router(ui_api.router)
    app.include_router(prompts_api.router)
    app.include_router(rag_api.router)
    app.include_router(keys_api.router)
    app.include_router(review_api.router)
    app.include_router(ab_api.router)
    app.include_router(dashboard_api.router)
    _install_error_handlers(app, gateway)

    @app.get("/healthz", tags=["fmstack"])
    async def healthz() -> dict:
        return {"status": "ok", "version": __version__, "models_loaded": sorted(gateway.pool.loaded)}

    @app.get("/metrics", tags=["fmstack"])
    async def metrics() -> Response:
        body = await asyncio.to_thread(gateway.metrics.render)  # trace scores are read from the store
        return Response(body, media_type="text/plain; version=0.0.4")

    return app


def _error(exc: FmstackError) -> JSONResponse:
    return JSONResponse(exc.to_body(), status_code=exc.status, headers=exc.headers())


def _endpoint_name(request: Request) -> str:
    return request.url.path.removeprefix("/v1/").replace("/", ".")


def _trace_rejected(gateway: Gateway):
    def record(path: str, exc: FmstackError) -> None:
        gateway.call(path.removeprefix("/v1/").replace("/", "."), "req", None).fail(exc)

    return record


def _install_error_handlers(app: FastAPI, gateway: Gateway) -> None:
    def traced(request: Request, err: FmstackError, body: object = None) -> JSONResponse:
        """Errors raised before an endpoint ran (bad JSON, bad fields) still get their trace row."""
        if request.url.path.startswith("/v1/"):
            params = body if isinstance(body, dict) else {"raw": _raw(body)}
            gateway.call(_endpoint_name(request), "req", params, context_of(request)).fail(err)
        return _error(err)

    @app.exception_handler(FmstackError)
    async def fmstack_error(request: Request, exc: FmstackError) -> JSONResponse:
        return _error(exc)  # the endpoint has already traced it

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return traced(request, _validation_error(exc), exc.body)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI could not even decode the body (e.g. invalid UTF-8)
            err = FmstackError(
                f"The request body could not be read ({exc.detail}). Send a UTF-8 JSON object.", code="invalid_json"
            )
        else:
            err = FmstackError(str(exc.detail), code=str(exc.status_code))
            err.status = exc.status_code
            err.type = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return traced(request, err) if exc.status_code == 400 else _error(err)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        body = {
            "error": {
                "message": f"Internal error: {type(exc).__name__}: {exc}",
                "type": "server_error",
                "param": None,
                "code": None,
            }
        }
        return JSONResponse(body, status_code=500)


def _raw(body: object) -> str | None:
    if body is None:
        return None
    if isinstance(body, bytes):
        return body[:2000].decode("utf-8", errors="replace")
    return json.dumps(body, default=str)[:2000]


def _validation_error(exc: RequestValidationError) -> FmstackError:
    """Pydantic's first complaint as one OpenAI-style sentence naming the field."""
    first = exc.errors()[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    if first.get("type") == "json_invalid" or not loc and first.get("type") != "missing":
        return FmstackError(
            f"The request body is not valid JSON ({first.get('msg')}). Send a UTF-8 JSON object.", code="invalid_json"
        )
    return FmstackError(f"Invalid value for '{param}': {first.get('msg')}.", param=param, code="invalid_value")
