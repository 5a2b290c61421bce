"""Terminal chat, streaming. In this process every turn goes through the gateway (traced like any API request);
with `--url` it talks to a running fmstack or any OpenAI-compatible server instead.

On /quit, end of input or Ctrl-C the chat waits until its traces are committed: the last answer is never lost.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Callable, Iterator

import openai
from rich.console import Console

from fmstack.core.config import Settings
from fmstack.core.errors import FmstackError
from fmstack.gateway import CallContext, Gateway
from fmstack.gateway.params import generation_request

HELP = "commands: /model NAME  /system TEXT  /reset  /quit"
APP = "fmstack-chat"

Reply = Callable[[str, list[dict]], Iterator[str]]  # (model, messages) -> the answer's text pieces


def run_chat(
    console: Console,
    settings: Settings,
    model: str,
    system: str | None,
    url: str | None,
    max_tokens: int | None = None,
) -> None:
    params = {"max_tokens": max_tokens} if max_tokens else {}
    if url is not None:
        _loop(console, model, system, _remote(url, params))
        return
    with asyncio.Runner() as runner:
        gateway = Gateway.open(settings)
        try:
            console.print(f"[dim]loading {model}…[/]")
            runner.run(asyncio.to_thread(gateway.pool.get, model))
            _loop(console, model, system, _local(gateway, runner, params))
        finally:
            gateway.close()  # commits every trace handed in before the process ends


def _loop(console: Console, model: str, system: str | None, reply: Reply) -> None:
    history: list[dict] = []
    console.print(f"[bold]fmstack chat[/] with [cyan]{model}[/] — {HELP}")
    while True:
        try:
            line = console.input("[bold green]you>[/] ").strip()
        except (EOFError, KeyboardInterrupt):
            console.print()
            return
        if not line:
            continue
        if line.startswith("/"):
            if (command := _command(console, line, history)) is None:
                return
            model, system = command.get("model", model), command.get("system", system)
            continue
        history.append({"role": "user", "content": line})
        messages = ([{"role": "system", "content": system}] if system else []) + history
        if (answer := _turn(console, reply, model, messages)) is None:
            history.pop()
        else:
            history.append({"role": "assistant", "content": answer})


def _command(console: Console, line: str, history: list[dict]) -> dict | None:
    """Apply a slash command; None means quit. Returns the settings it changed."""
    cmd, _, arg = line.partition(" ")
    if cmd in ("/quit", "/exit"):
        return None
    if cmd == "/model" and arg:
        console.print(f"[dim]model: {arg.strip()}[/]")
        return {"model": arg.strip()}
    if cmd == "/system":
        console.print(f"[dim]system prompt: {arg.strip() or '(none)'}[/]")
        return {"system": arg.strip() or None}
    if cmd == "/reset":
        history.clear()
        console.print("[dim]conversation cleared[/]")
    else:
        console.print(f"[dim]{HELP}[/]")
    return {}


def _turn(console: Console, reply: Reply, model: str, messages: list[dict]) -> str | None:
    """Stream one answer; None when it failed (the turn is dropped from the history). Ctrl-C stops the answer."""
    parts: list[str] = []
    try:
        pieces = reply(model, messages)
        first = next(pieces, "")  # a model that cannot answer fails here, before the answer's prompt is shown
        console.print("[bold blue]assistant>[/] ", end="")
        for text in itertools.chain([first], pieces):
            parts.append(text)
            console.out(text, end="", highlight=False)
        console.print()
    except KeyboardInterrupt:
        console.print("\n[dim](stopped)[/]")
    except FmstackError as exc:
        console.print(f"\n[red]{exc.status}: {exc.message}[/]")
        return None
    except openai.APIStatusError as exc:
        message = exc.body.get("message") if isinstance(exc.body, dict) else exc
        console.print(f"\n[red]{exc.status_code}: {message}[/]")
        return None
    except openai.APIConnectionError:
        console.print("\n[red]cannot reach the server; is it running? (`fmstack up`)[/]")
        return None
    except openai.APIError as exc:  # an error event in the middle of the stream
        console.print(f"\n[red]{exc.message}[/]")
        return None
    return "".join(parts)


def _local(gateway: Gateway, runner: asyncio.Runner, params: dict) -> Reply:
    """Answers from the gateway, read one delta at a time on the chat's own event loop."""

    def reply(model: str, messages: list[dict]) -> Iterator[str]:
        recorded = {"model": model, "messages": messages} | params
        call = gateway.call("chat.completions", "chatcmpl", recorded, CallContext(APP))
        deltas = runner.run(gateway.stream(call, model, generation_request(messages, params)))
        try:
            while (delta := runner.run(anext(deltas, None))) is not None:
                yield delta.text
        finally:
            runner.run(deltas.aclose())  # a stopped answer stops the generation and is traced as cancelled

    return reply


def _remote(url: str, params: dict) -> Reply:
    key = os.environ.get("FMSTACK_API_KEY") or os.environ.get("OPENAI_API_KEY") or "none"  # for a server with keys
    client = openai.OpenAI(base_url=url, api_key=key, default_headers={"X-Fmstack-App": APP})

    def reply(model: str, messages: list[dict]) -> Iterator[str]:
        for chunk in client.chat.completions.create(model=model, messages=messages, stream=True, **params):
            if chunk.choices and (text := chunk.choices[0].delta.content):
                yield text

    return reply
