"""Errors a user can cause, each carrying the HTTP status and OpenAI error type the server answers with."""

from __future__ import annotations


class FmstackError(Exception):
    """A problem the user can fix; the message says what to do next."""

    status = 400
    type = "invalid_request_error"
    retry_after: int | None = None  # seconds; every 429 and 503 tells the client when to come back (default 1)

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

    def to_body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def headers(self) -> dict[str, str] | None:
        if self.status in (429, 503):
            return {"Retry-After": str(self.retry_after or 1)}
        return None


class InvalidRequest(FmstackError):
    pass


class ContextLengthExceeded(FmstackError):
    def __init__(self, message: str):
        super().__init__(message, param="messages", code="context_length_exceeded")


class ModelNotFound(FmstackError):
    status = 404

    def __init__(self, name: str, known: list[str]):
        super().__init__(
            f"The model '{name}' does not exist. Known models: {', '.join(sorted(known))}. "
            "Run `fmstack models` to list them.",
            param="model",
            code="model_not_found",
        )


class ModelUnavailable(FmstackError):
    """The model is in the registry but its files cannot be had (missing package, offline hub, bad hash)."""

    status = 503
    type = "model_unavailable"


class QueueFull(FmstackError):
    status = 429
    type = "rate_limit_error"

    def __init__(self, model: str, retry_after: int = 1):
        super().__init__(f"The queue for model '{model}' is full; retry after {retry_after} s.", code="queue_full")
        self.retry_after = retry_after


class NotFound(FmstackError):
    status = 404
    type = "not_found_error"


class EngineError(FmstackError):
    """The engine failed on a valid request: our fault or the remote's, not the user's."""

    status = 502
    type = "engine_error"


class RequestTimeout(FmstackError):
    status = 504
    type = "timeout_error"
