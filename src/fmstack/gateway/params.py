"""Generation parameters as Python callers give them (a dict, as stored with a prompt version or an eval suite)."""

from __future__ import annotations

from typing import Any

from fmstack.core.errors import InvalidRequest
from fmstack.engines.base import GenerationRequest

GENERATION_PARAMS = ("temperature", "top_p", "max_tokens", "stop", "seed", "response_format")


def generation_request(messages: list[dict], params: dict[str, Any]) -> GenerationRequest:
    """A chat request from `params`; `stop` may be one string or a list, as in OpenAI's API."""
    if unknown := sorted(set(params) - set(GENERATION_PARAMS)):
        raise InvalidRequest(
            f"Unknown parameter(s) {', '.join(unknown)}; known: {', '.join(GENERATION_PARAMS)}.", param=unknown[0]
        )
    stop = params.get("stop")
    sampling = {k: v for k, v in params.items() if k != "stop"}
    return GenerationRequest(messages=messages, stop=[stop] if isinstance(stop, str) else list(stop or []), **sampling)
