"""The HTTP server: the OpenAI-compatible API, the web UI's API, metrics and health."""

from fmstack.server.app import create_app

__all__ = ["create_app"]
