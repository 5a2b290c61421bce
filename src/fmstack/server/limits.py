"""Refuse oversized request bodies before reading them into memory (413, OpenAI-style error, traced)."""

from __future__ import annotations

import json
from collections.abc import Callable

from fmstack.core.errors import FmstackError


class BodyTooLarge(FmstackError):
    status = 413


class BodyLimit:
    """Pure ASGI middleware: checks Content-Length, and counts bytes of bodies sent without one."""

    def __init__(self, app, max_bytes: int, on_reject: Callable[[str, FmstackError], None]):
        self.app = app
        self.max_bytes = max_bytes
        self.on_reject = on_reject

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._reject(scope, send)
        if declared is not None:
            return await self.app(scope, receive, send)
        body, more = b"", True  # no Content-Length (chunked): read up to the limit, then replay
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return await self.app(scope, _replay(message, receive), send)
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                return await self._reject(scope, send)
        await self.app(scope, _replay({"type": "http.request", "body": body, "more_body": False}, receive), send)

    async def _reject(self, scope, send) -> None:
        error = BodyTooLarge(
            f"The request body is larger than {self.max_bytes} bytes; send less (the limit is FMSTACK_MAX_BODY_BYTES).",
            code="body_too_large",
        )
        self.on_reject(scope["path"], error)
        body = json.dumps(error.to_body()).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _replay(first: dict, receive):
    """A `receive` that returns `first` once, then whatever the client sends next (a disconnect)."""
    pending = [first]

    async def replayed():
        return pending.pop() if pending else await receive()

    return replayed
