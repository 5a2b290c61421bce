"""Using stored prompts from Python: render one, or call a model through it with the call traced.

```python
from fmstack.app import prompts

messages = prompts.render("capitals@production", {"country": "France"}).messages
reply = prompts.complete("capitals@production", {"country": "France"}, model="smollm2-135m-instruct")
print(reply.text, reply.trace_id)   # the trace row carries prompt_name="capitals" and its version
```

`complete` runs the model in this process (fmstack's engines) and writes the trace itself, or, given `base_url`,
calls a running fmstack server's `/v1/prompts/{ref}/chat/completions`, which traces it the same way.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from fmstack.app.prompts.store import PromptStore, StoredPrompt
from fmstack.core.config import Settings, get_settings
from fmstack.core.errors import FmstackError, InvalidRequest

GENERATION_PARAMS = ("temperature", "top_p", "max_tokens", "stop", "seed", "response_format")


@dataclass
class Rendered:
    """A prompt version rendered with variables: the messages to send and the parameters to send them with."""

    prompt: StoredPrompt
    variables: dict[str, Any]
    messages: list[dict[str, str]]
    params: dict[str, Any] = field(default_factory=dict)  # the version's parameters (model among them, if set)

    @property
    def model(self) -> str | None:
        return self.params.get("model")


@dataclass
class Completion:
    text: str
    trace_id: str
    model: str
    prompt: str  # "name@version"
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float


class Prompts:
    """Stored prompts with a store and (lazily) fmstack's engines; one per process is enough."""

    def __init__(self, store: PromptStore | None = None, settings: Settings | None = None, pool=None):
        self.settings = settings or get_settings()
        self.store = store or PromptStore.open(self.settings)
        self._pool = pool
        self._writer = None
        self._lock = threading.Lock()

    def get(self, ref: str) -> StoredPrompt:
        return self.store.get(ref)

    def render(self, ref: str | StoredPrompt, variables: dict[str, Any] | None = None) -> Rendered:
        """Resolve `ref` and render it; a missing variable raises `MissingVariable` naming it."""
        prompt = ref if isinstance(ref, StoredPrompt) else self.store.get(ref)
        variables = dict(variables or {})
        return Rendered(prompt, variables, prompt.render(variables), prompt.params)

    def complete(
        self,
        ref: str,
        variables: dict[str, Any] | None = None,
        *,
        model: str | None = None,
        app: str | None = "fmstack-python",
        base_url: str | None = None,
        **params: Any,
    ) -> Completion:
        """Render `ref` and answer it with `model` (default: the version's model); the trace records the prompt's
        name and version. `params` (temperature, max_tokens…) override the version's."""
        if base_url:
            return _complete_remote(base_url, ref, variables, model, app, params)
        rendered = self.render(ref, variables)
        unknown = sorted(set(params) - set(GENERATION_PARAMS))
        if unknown:
            raise InvalidRequest(f"Unknown parameter(s) {', '.join(unknown)}; known: {', '.join(GENERATION_PARAMS)}.")
        name = model or rendered.model
        if not name:
            raise InvalidRequest(
                f"Prompt '{rendered.prompt.label}' names no model; pass model=… (or store one in its params).",
                param="model",
            )
        sampling = {k: v for k, v in rendered.params.items() if k != "model"} | params
        return asyncio.run(self._generate(rendered, name, sampling, app))

    @property
    def pool(self):
        with self._lock:
            if self._pool is None:
                from fmstack.engines.pool import EnginePool
                from fmstack.core.registry import Registry

                self._pool = EnginePool(Registry(self.settings), self.settings)
            return self._pool

    @property
    def writer(self):
        with self._lock:
            if self._writer is None:
                from fmstack.core.store.traces import TraceWriter

                self._writer = TraceWriter(self.store.sessions)
            return self._writer

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._pool is not None:
            self._pool.close()

    async def _generate(self, rendered: Rendered, model: str, sampling: dict, app: str | None) -> Completion:
        from fmstack.engines.base import Delta, Finish, GenerationRequest
        from fmstack.core.store.schema import utcnow

        prompt = rendered.prompt
        trace_id = f"chatcmpl-{uuid.uuid4().hex}"
        request = {"model": model, "messages": rendered.messages, **sampling}
        request |= {"prompt_ref": prompt.label, "variables": rendered.variables}
        row: dict[str, Any] = dict(
            id=trace_id,
            created_at=utcnow(),
            endpoint="prompts.complete",
            model=model[:200],
            app=app[:200] if app else None,
            request=request,
            prompt_name=prompt.name,
            prompt_version=str(prompt.version),
            prompt_tokens=0,
            completion_tokens=0,
            cost=0.0,
        )
        t0 = time.perf_counter()
        first = None
        parts: list[str] = []
        finish = None
        try:
            spec = self.pool.registry.get(model)
            row["engine"] = spec.engine
            engine = await asyncio.to_thread(self.pool.chat, model)
            stop = sampling.get("stop")
            generation = GenerationRequest(
                messages=rendered.messages,
                **{k: v for k, v in sampling.items() if k != "stop"},
                stop=[stop] if isinstance(stop, str) else list(stop or []),
            )
            prepared = engine.prepare(generation)
            row["prompt_tokens"] = prepared.prompt_tokens
            async for event in engine.stream(prepared):
                if isinstance(event, Delta):
                    first = first or time.perf_counter()
                    parts.append(event.text)
                    row["completion_tokens"] += event.tokens
                elif isinstance(event, Finish):
                    finish = event
        except Exception as exc:
            status = exc.status if isinstance(exc, FmstackError) else 500
            message = exc.message if isinstance(exc, FmstackError) else f"{type(exc).__name__}: {exc}"
            row.update(status="error", status_code=status, error=message)
            self._write(row, t0, first, parts)
            raise
        if finish is not None:
            row.update(prompt_tokens=finish.prompt_tokens, completion_tokens=finish.completion_tokens)
        row.update(status="ok", status_code=200, finish_reason=finish.reason if finish else None)
        row["cost"] = spec.cost(row["prompt_tokens"], row["completion_tokens"])
        self._write(row, t0, first, parts)
        return Completion(
            "".join(parts),
            trace_id,
            model,
            prompt.label,
            row["finish_reason"],
            row["prompt_tokens"],
            row["completion_tokens"],
            row["latency_ms"],
        )

    def _write(self, row: dict, t0: float, first: float | None, parts: list[str]) -> None:
        """The same trace row the server writes; committed before `complete` returns."""
        now = time.perf_counter()
        row["latency_ms"] = (now - t0) * 1000
        row["response_text"] = "".join(parts) if parts else None
        if first is not None:
            row["ttft_ms"] = (first - t0) * 1000
            if row["completion_tokens"] > 1 and now > first:
                row["tokens_per_s"] = (row["completion_tokens"] - 1) / (now - first)
        self.writer.write(row)
        self.writer.flush()


def _complete_remote(
    base_url: str, ref: str, variables: dict | None, model: str | None, app: str | None, params: dict
) -> Completion:
    import httpx

    from fmstack.app.prompts.refs import PromptError

    body = {"variables": variables or {}, **params} | ({"model": model} if model else {})
    headers = {"X-Fmstack-App": app} if app else {}
    url = f"{base_url.rstrip('/')}/prompts/{ref}/chat/completions"
    t0 = time.perf_counter()
    response = httpx.post(url, json=body, headers=headers, timeout=get_settings().request_timeout)
    data = response.json()
    if response.status_code != 200:
        error = data.get("error", {}) if isinstance(data, dict) else {}
        exc = PromptError(error.get("message") or response.text, param=error.get("param"), code=error.get("code"))
        exc.status = response.status_code
        raise exc
    usage = data.get("usage") or {}
    choice = data["choices"][0]
    return Completion(
        choice["message"]["content"],
        data["id"],
        data["model"],
        response.headers.get("x-fmstack-prompt", ref),
        choice.get("finish_reason"),
        usage.get("prompt_tokens", 0),
        usage.get("completion_tokens", 0),
        (time.perf_counter() - t0) * 1000,
    )


_default: Prompts | None = None
_default_lock = threading.Lock()


def default() -> Prompts:
    """The process's `Prompts` on the configured store (FMSTACK_HOME / FMSTACK_DATABASE_URL); a new one when that
    configuration changed."""
    global _default
    with _default_lock:
        settings = get_settings()
        if _default is None or _default.settings.db_url != settings.db_url:
            if _default is not None:
                _default.close()
            _default = Prompts(settings=settings)
        return _default


def render(ref: str, variables: dict[str, Any] | None = None) -> Rendered:
    return default().render(ref, variables)


def complete(ref: str, variables: dict[str, Any] | None = None, **kwargs: Any) -> Completion:
    return default().complete(ref, variables, **kwargs)
