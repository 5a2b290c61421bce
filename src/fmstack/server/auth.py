"""API keys over HTTP: `Authorization: Bearer KEY` on every /v1 and /api route, once a key exists.

Until the first key is created nothing changes: a server on loopback answers everyone, as before (`fmstack up`
refuses other interfaces without a key). A running server notices its first key within a second; from then on —
revoking every key does not turn it off — a request needs an active key (401), with the scope its route needs
(403), within the key's limits (429 with Retry-After; `insufficient_quota` over budget). The check runs before the
body is read, and a refused request is not traced: it never reached a model, and a flood of them must not fill the
store. /healthz, /metrics (aggregate numbers, no messages, no names), the pages and the OpenAPI schema stay open;
the pages ask for a key when the API says 401.

Each route's scope is in `RULES`; a /v1 or /api route not listed there needs `admin`, so a new route stays closed
until someone decides who may call it.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers

from fmstack.core.errors import FmstackError
from fmstack.core.keys import InvalidApiKey, Key, KeyStore, Limiter, MissingScope

PROTECTED = ("/v1/", "/api/")
LOOK_EVERY = 1.0  # seconds between looks for a first key while there is none


@dataclass(frozen=True)
class Rule:
    """The scope a route needs; `metered` routes call a model, so the key's rpm, tpm and budget apply."""

    method: str
    path: re.Pattern
    scope: str
    metered: bool = False


def _rule(method: str, path: str, scope: str, metered: bool = False) -> Rule:
    return Rule(method, re.compile(path), scope, metered)


RULES = (
    _rule("GET", r"/v1/models(/.+)?", "inference"),
    _rule("POST", r"/v1/(chat/completions|completions|embeddings|responses)", "inference", metered=True),
    _rule("GET", r"/v1/rag/collections", "inference"),
    _rule("POST", r"/v1/rag/[^/]+/(search|chat/completions)", "inference", metered=True),
    _rule("POST", r"/v1/prompts/[^/]+/render", "inference"),
    _rule("POST", r"/v1/prompts/[^/]+/chat/completions", "inference", metered=True),
    _rule("GET", r"/v1/reviews/pending/[^/]+", "inference"),  # a crawl client waiting for its held answer
    _rule("POST", r"/v1/feedback", "feedback"),
)
ADMIN = Rule("*", re.compile(".*"), "admin")


def rule_for(method: str, path: str) -> Rule:
    return next((r for r in RULES if r.method == method and r.path.fullmatch(path)), ADMIN)


class Auth:
    """Pure ASGI middleware: the key checked for its route, then left in `request.state.api_key` for
    `deps.context_of` (the trace's app and key name come from it, not from headers a client can forge)."""

    def __init__(self, app, keys: KeyStore):
        self.app = app
        self.keys = keys
        self.limiter = Limiter(keys)
        self._on = keys.exists()  # known before the first request, which must not slip through
        self._next_look = time.monotonic() + LOOK_EVERY

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith(PROTECTED) or not await self._enabled():
            return await self.app(scope, receive, send)
        authorization = Headers(scope=scope).get("authorization")
        try:
            key = await asyncio.to_thread(self.check, scope["method"], scope["path"], authorization)
        except FmstackError as exc:
            response = JSONResponse(exc.to_body(), status_code=exc.status, headers=exc.headers())
            return await response(scope, receive, send)
        scope.setdefault("state", {})["api_key"] = key
        await self.app(scope, receive, send)

    def check(self, method: str, path: str, authorization: str | None) -> Key:
        """The request's key, allowed on this route and within its limits."""
        key = self.keys.authenticate(_bearer(authorization))
        rule = rule_for(method, path)
        if not key.allows(rule.scope):
            raise MissingScope(
                f"The key '{key.name}' may use {', '.join(key.scopes)}; {method} {path} needs the '{rule.scope}' scope."
            )
        if rule.metered:
            self.limiter.admit(key)
        return key

    async def _enabled(self) -> bool:
        """Keys are on from the first one and, as keys are never deleted, stay on. While they are off the store is
        asked at most every LOOK_EVERY seconds (a key made by `fmstack keys create` meanwhile), so a server without
        keys pays nothing per request."""
        if not self._on and time.monotonic() >= self._next_look:
            self._next_look = time.monotonic() + LOOK_EVERY
            self._on = await asyncio.to_thread(self.keys.exists)
        return self._on


def _bearer(authorization: str | None) -> str:
    if authorization is None:
        raise InvalidApiKey(
            "This server requires an API key: send `Authorization: Bearer KEY` (an admin makes keys with "
            "`fmstack keys create`)."
        )
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidApiKey("The Authorization header must read `Bearer KEY`.")
    return token.strip()
