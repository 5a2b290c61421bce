"""`X-Request-Id` on every response: the client's own when it sent one (so its logs and ours line up), else a new
one. Pure ASGI, so streamed responses are not buffered."""

from __future__ import annotations

import re
import uuid

_SAFE = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


class RequestId:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        sent = dict(scope["headers"]).get(b"x-request-id", b"")
        request_id = sent if _SAFE.fullmatch(sent) else f"req-{uuid.uuid4().hex}".encode()

        async def with_id(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id)]
            await send(message)

        await self.app(scope, receive, with_id)
