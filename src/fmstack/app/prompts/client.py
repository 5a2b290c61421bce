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
from dataclasses import dataclass, field
from typing import Any

from fmstack.app.prompts.store import PromptStore, StoredPrompt
from fmstack.core.config import Settings, get_settings
from fmstack.core.errors import InvalidRequest
from fmstack.gateway import CallContext, Gateway, generation_request
from fmstack.gateway.routes import Variant


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

    def __init__(self, store: PromptStore | None = None, settings: Settings | None = None):
        self.settings = settings or get_settings()
        self.store = store or PromptStore.open(self.settings)
        self._gateway: Gateway | None = None
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
        user: str | None = None,
        **params: Any,
    ) -> Completion:
        """Render `ref` and answer it with `model` (default: the version's model); the trace records the prompt's
        name and version. `params` (temperature, max_tokens…) override the version's. When `ref` is an A/B prompt
        route (an alias split between versions, `fmstack ab create capitals@production …`), `user` picks its
        version (sticky; random without one) and the trace records the route and the variant."""
        if base_url:
            return _complete_remote(base_url, ref, variables, model, app, params | ({"user": user} if user else {}))
        route = self.gateway.router.prompt_variant(ref, user)  # an A/B prompt route: the variant that answers
        if route is not None:
            ref = route[1].prompt or route[1].name
        rendered = self.render(ref, variables)
        generation_request([], params)  # unknown parameters fail here, before any model loads
        name = model or rendered.model
        if not name:
            raise InvalidRequest(
                f"Prompt '{rendered.prompt.label}' names no model; pass model=… (or store one in its params).",
                param="model",
            )
        sampling = {k: v for k, v in rendered.params.items() if k != "model"} | params
        return asyncio.run(self._generate(rendered, name, sampling, app, route, user))

    @property
    def gateway(self) -> Gateway:
        """fmstack's engines and trace writer on this store, made on first use."""
        with self._lock:
            if self._gateway is None:
                self._gateway = Gateway(self.settings, self.store.sessions)
            return self._gateway

    def close(self) -> None:
        if self._gateway is not None:
            self._gateway.close()

    async def _generate(
        self,
        rendered: Rendered,
        model: str,
        sampling: dict,
        app: str | None,
        route: tuple[str, Variant] | None = None,
        user: str | None = None,
    ) -> Completion:
        prompt = rendered.prompt
        recorded = {"messages": rendered.messages, **sampling, "prompt_ref": prompt.label}
        routed = {"route": route[0], "variant": route[1].name} if route is not None else {}
        context = CallContext(app=app, user=user, prompt_name=prompt.name, prompt_version=str(prompt.version), **routed)
        request = generation_request(rendered.messages, sampling)
        answer = await self.gateway.complete(
            model, request, context, "prompts.complete", recorded | {"variables": rendered.variables}
        )
        self.gateway.writer.flush()  # committed before `complete` returns
        return Completion(
            answer.text,
            answer.trace_id,
            model,
            prompt.label,
            answer.finish_reason,
            answer.prompt_tokens,
            answer.completion_tokens,
            answer.latency_ms,
        )


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
