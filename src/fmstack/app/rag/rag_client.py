"""A client of `POST /v1/rag/{collection}/chat/completions` for the terminal: streams the answer, returns the
sources (the last chunk before [DONE])."""

from __future__ import annotations

import json
from collections.abc import Callable
from urllib.parse import quote

import httpx

from fmstack.core.errors import FmstackError


def stream_answer(base: str, collection: str, body: dict, on_text: Callable[[str], None], timeout: float = 600) -> list:
    url = f"{base.rstrip('/')}/v1/rag/{quote(collection, safe='')}/chat/completions"
    sources: list = []
    try:
        with httpx.stream("POST", url, json=body, timeout=timeout, headers={"X-Fmstack-App": "fmstack-rag"}) as r:
            if r.status_code != 200:
                r.read()
                raise FmstackError(_error_message(r))
            for line in r.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    raise FmstackError(chunk["error"].get("message", str(chunk["error"])))
                if "sources" in chunk:
                    sources = chunk["sources"]
                for choice in chunk.get("choices") or []:
                    if text := (choice.get("delta") or {}).get("content"):
                        on_text(text)
    except httpx.HTTPError as exc:
        raise FmstackError(f"Cannot reach {base} ({exc}); is the server running (`fmstack up`)?") from None
    return sources


def _error_message(response: httpx.Response) -> str:
    try:
        return response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:300]}"
