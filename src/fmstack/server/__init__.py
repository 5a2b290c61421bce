"""The HTTP server: the OpenAI-compatible API, the prompts and RAG routes, the web pages, /metrics and /healthz.

Routes turn HTTP into calls of `fmstack.gateway.Gateway` and of the application (`fmstack.app`); they hold no
generation logic of their own. Layer: imports `fmstack.app`, `fmstack.model`, `fmstack.gateway`, `fmstack.engines`
and `fmstack.core`; only `fmstack.cli` imports it.
"""

from fmstack.server.app import create_app

__all__ = ["create_app"]
