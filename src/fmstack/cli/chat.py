"""Terminal chat, streaming, through the OpenAI-compatible API so every turn is traced like any other request.

Without a URL, an fmstack server is started inside this process on a free port (one code path, traced).
"""

from __future__ import annotations

import socket
import threading
import time

import httpx
import openai
from rich.console import Console

from fmstack.core.config import Settings
from fmstack.core.errors import ModelUnavailable

HELP = "commands: /model NAME  /system TEXT  /reset  /quit"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _embedded_server(settings: Settings, model: str) -> str:
    """Start fmstack's server in a background thread; return its API base URL once it answers."""
    import uvicorn

    from fmstack.server import create_app

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, preload=[model]), port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and thread.is_alive():  # a failed model load ends the server thread
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return f"{base}/v1"
        except httpx.HTTPError:
            time.sleep(0.2)
    raise ModelUnavailable(f"The embedded server did not start with model '{model}'.")


def run_chat(console: Console, settings: Settings, model: str, system: str | None, url: str | None) -> None:
    if url is None:
        console.print(f"[dim]loading {model}…[/]")
        url = _embedded_server(settings, model)
    client = openai.OpenAI(base_url=url, api_key="fmstack", default_headers={"X-Fmstack-App": "fmstack-chat"})
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
            cmd, _, arg = line.partition(" ")
            if cmd in ("/quit", "/exit"):
                return
            if cmd == "/model" and arg:
                model = arg.strip()
                console.print(f"[dim]model: {model}[/]")
            elif cmd == "/system":
                system = arg.strip() or None
                console.print(f"[dim]system prompt: {system or '(none)'}[/]")
            elif cmd == "/reset":
                history.clear()
                console.print("[dim]conversation cleared[/]")
            else:
                console.print(f"[dim]{HELP}[/]")
            continue
        history.append({"role": "user", "content": line})
        messages = ([{"role": "system", "content": system}] if system else []) + history
        try:
            stream = client.chat.completions.create(model=model, messages=messages, stream=True)
            console.print("[bold blue]assistant>[/] ", end="")
            parts = []
            for chunk in stream:
                if chunk.choices and (text := chunk.choices[0].delta.content):
                    parts.append(text)
                    console.out(text, end="", highlight=False)
            console.print()
            history.append({"role": "assistant", "content": "".join(parts)})
        except openai.APIStatusError as exc:
            history.pop()
            console.print(
                f"[red]{exc.status_code}: {exc.body.get('message') if isinstance(exc.body, dict) else exc}[/]"
            )
        except openai.APIConnectionError:
            history.pop()
            console.print(f"[red]cannot reach {url}; is the server running? (`fmstack up`)[/]")
        except openai.APIError as exc:  # an error event in the middle of the stream
            history.pop()
            console.print(f"\n[red]{exc.message}[/]")
