"""`fmstack keys …`: API keys for the server — create (the key is shown once), list, revoke, rotate — and the check
that keeps `fmstack up` off the network until a key exists.

Exit code 2, with one line naming the field, for anything to fix: an unknown scope, a malformed budget, a taken
name, an unknown key.
"""

from __future__ import annotations

import ipaddress

import typer

from fmstack.cli.common import JSON, Col, command_group, console, err, print_json, show_rows, store
from fmstack.core.errors import FmstackError

keys_app = command_group(
    "API keys: who may call the server, for what (scopes), how fast (rpm, tpm) and for how much (a budget).\n\n"
    "Example: fmstack keys create --name shop-bot --app shop-bot --scope inference --rpm 60 --budget 5/day",
    no_args_is_help=True,
)

KEY_COLUMNS = (
    Col("name", lambda k: k.name, no_wrap=True),
    Col("app", lambda k: k.app),
    Col("scopes", lambda k: ",".join(k.scopes)),
    Col("key", lambda k: f"{k.prefix}…", no_wrap=True),
    Col("rpm", lambda k: str(k.rpm or "-")),
    Col("tpm", lambda k: str(k.tpm or "-")),
    Col("budget $", lambda k: str(k.budget or "-")),
    Col("status", lambda k: "active" if k.active else "[red]revoked[/]"),
    Col("created", lambda k: f"{k.created_at:%Y-%m-%d %H:%M}"),
)


def _keys():
    from fmstack.core.keys import KeyStore

    return KeyStore(store())


def _show_new(new, as_json: bool, what: str) -> None:
    """The secret, once: on stdout alone (or in the JSON), with how to use it on stderr."""
    if as_json:
        print_json(new)
        return
    k = new.key
    err.print(f"{what} key [cyan]{k.name}[/] (app {k.app}, scopes {', '.join(k.scopes)})", soft_wrap=True)
    console.print(new.secret, soft_wrap=True, highlight=False)
    err.print("Shown this once: store it now. Clients send it as `Authorization: Bearer KEY`.", soft_wrap=True)


@keys_app.command("create")
def keys_create(
    name: str = typer.Option(..., "--name", help="The key's name: traces record it (never the key)."),
    app_name: str = typer.Option(None, "--app", help="The app its calls are traced under (default: the name)."),
    scopes: list[str] = typer.Option(
        ["inference"], "--scope", help="inference, feedback or admin (admin may do everything); repeat for several."
    ),
    rpm: int = typer.Option(None, "--rpm", help="Model requests per minute."),
    tpm: int = typer.Option(None, "--tpm", help="Tokens (prompt + completion) per minute."),
    budget: str = typer.Option(None, "--budget", help="USD per calendar day or month (UTC): 5/day, 100/month."),
    as_json: bool = JSON,
) -> None:
    """Create a key and print it, once: the store keeps only its hash. The first key turns authentication on.

    Example: fmstack keys create --name shop-bot --app shop-bot --scope inference --rpm 60 --tpm 20000 --budget 5/day
    """
    _show_new(_keys().create(name, app_name, scopes, rpm, tpm, budget), as_json, "created")


@keys_app.command("list")
def keys_list(as_json: bool = JSON) -> None:
    """List every key, revoked ones too: app, scopes, limits, budget and the key's first characters.

    Example: fmstack keys list --json
    """
    show_rows(_keys().list(), KEY_COLUMNS, as_json)


@keys_app.command("revoke")
def keys_revoke(name: str = typer.Argument(..., help="The key's name.")) -> None:
    """Revoke a key: requests with it get 401 at once. Its name stays taken, as its traces carry it.

    Example: fmstack keys revoke shop-bot
    """
    key = _keys().revoke(name)
    console.print(f"revoked key [cyan]{key.name}[/] ({key.prefix}…)", soft_wrap=True)


@keys_app.command("rotate")
def keys_rotate(name: str = typer.Argument(..., help="The key's name."), as_json: bool = JSON) -> None:
    """Give a key a new secret, printed once; the old one stops working at once. Name, app, scopes, limits and
    the budget's spend carry over.

    Example: fmstack keys rotate shop-bot
    """
    _show_new(_keys().rotate(name), as_json, "rotated")


def refuse_open_network(host: str, insecure: bool) -> None:
    """`fmstack up` on an interface other machines reach, with no key: without one anyone who can connect could
    read every trace (all users' messages), change prompts and use the models. Refused unless `--insecure`."""
    if _loopback(host) or _keys().exists():
        return
    if not insecure:
        raise FmstackError(
            f"Refusing to listen on {host} without API keys: anyone who can reach it could read every trace, change "
            "prompts and use the models. Create a key first (fmstack keys create --name admin --scope admin), or "
            "pass --insecure to serve without authentication."
        )
    err.print(
        f"[bold yellow]warning:[/] serving on {host} without API keys (--insecure): anyone who reaches it can use it.",
        soft_wrap=True,
    )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False
