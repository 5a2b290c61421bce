"""`fmstack ab …`: A/B routes — create a split, change it, compare the variants on real traffic, promote one
(optionally gated on the comparison), roll back, delete; every change recorded with who made it.

A running server picks up a change within a second. Exit code 2, with one line naming the field, for anything to
fix: an unknown route, weights that do not sum to 100, a variant that is not a registry model or not on this
machine (on a prompt route: not a version of the prompt), a promotion to a variant the route does not have, a
gate the numbers do not pass.
"""

from __future__ import annotations

import getpass
import re
from datetime import UTC, datetime, timedelta

import typer

from fmstack.cli.common import JSON, Col, command_group, console, print_json, show_rows, store
from fmstack.core.errors import FmstackError

ab_app = command_group(
    "A/B serving: split a model name between variants by weight (sticky per user), compare them, promote one.\n\n"
    "Example: fmstack ab create smollm2-135m-instruct --variant smollm2-135m-instruct=90 --variant smollm2-priced=10",
    no_args_is_help=True,
)

VARIANT = typer.Option(
    ..., "--variant", "-v", help="MODEL=PERCENT, or NAME@VERSION=PERCENT on a prompt route (repeat; sum to 100)."
)
SINCE = typer.Option(None, "--since", help="Only traces from then on: 24h, 7d, 30m or an ISO time (UTC).")
ROUTE_COLUMNS = (
    Col("route", lambda r: r.name, no_wrap=True),
    Col("split", lambda r: r.split),
    Col("variants", lambda r: ", ".join(v.name for v in r.variants)),
    Col("updated", lambda r: f"{r.updated_at:%Y-%m-%d %H:%M}"),
)
CHANGE_COLUMNS = (
    Col("#", lambda c: str(c.id)),
    Col("when", lambda c: f"{c.created_at:%Y-%m-%d %H:%M:%S}", no_wrap=True),
    Col("action", lambda c: c.action + (f" (undoes #{c.undoes})" if c.undoes else "") + (" [gated]" if c.gate else "")),
    Col("before", lambda c: _split(c.before)),
    Col("after", lambda c: _split(c.after)),
    Col("by", lambda c: c.actor or "-"),
)


def _routes():
    from fmstack.app.ab import RouteStore
    from fmstack.core.config import get_settings
    from fmstack.core.registry import Registry

    return RouteStore(store(), Registry(get_settings()))


def _actor() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (some containers)
        return None


def _weights(items: list[str]) -> dict[str, int]:
    """`MODEL=PERCENT` options as {model: percent}, each model once."""
    weights: dict[str, int] = {}
    for item in items:
        model, eq, percent = item.rpartition("=")
        if not eq or not model or not percent.strip().isdigit():
            raise FmstackError(f"--variant '{item}': write MODEL=PERCENT, e.g. smollm2-135m-instruct=90.")
        if model in weights:
            raise FmstackError(f"--variant: '{model}' is given twice.")
        weights[model] = int(percent)
    return weights


def _moment(text: str | None) -> datetime | None:
    """`24h`, `7d`, `30m` ago, or an ISO time (UTC unless it says otherwise)."""
    if text is None:
        return None
    if match := re.fullmatch(r"(\d+)([mhd])", text.strip()):
        unit = {"m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
        return datetime.now(UTC) - timedelta(**{unit: int(match.group(1))})
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise FmstackError(f"--since '{text}': give 24h, 7d, 30m or an ISO time such as 2026-05-01T09:00.") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _split(weights: dict[str, int] | None) -> str:
    return " ".join(f"{name}={w}" for name, w in weights.items() if w) if weights else "-"


def _done(verb: str, route) -> None:
    console.print(f"{verb} [cyan]{route.name}[/]: {route.split}", soft_wrap=True)


@ab_app.command("create")
def ab_create(
    route: str = typer.Argument(..., help="The name clients send as `model`, or a prompt alias NAME@ALIAS."),
    variant: list[str] = VARIANT,
):
    """Create a route: requests for ROUTE are answered by the variants in these shares, a user always by the same
    one. ROUTE may be a model's own name (its traffic is then split) or a new name; or a stored prompt's alias
    (`capitals@production`), split between versions of the prompt (`-v capitals@1=90 -v capitals@2=10`).

    Example: fmstack ab create smollm2-135m-instruct --variant smollm2-135m-instruct=90 --variant smollm2-priced=10
    """
    _done("created", _routes().create(route, _weights(variant), _actor()))


@ab_app.command("split")
def ab_split(route: str = typer.Argument(..., help="The route."), variant: list[str] = VARIANT):
    """Change a route's shares (ramp a variant up or down); a new model joins the route, one left out gets 0.

    Example: fmstack ab split smollm2-135m-instruct --variant smollm2-135m-instruct=50 --variant smollm2-priced=50
    """
    _done("split", _routes().split(route, _weights(variant), _actor()))


@ab_app.command("list")
def ab_list(as_json: bool = JSON) -> None:
    """List the routes and their live splits.

    Example: fmstack ab list --json
    """
    show_rows(_routes().list(), ROUTE_COLUMNS, as_json)


@ab_app.command("history")
def ab_history(route: str = typer.Argument(..., help="The route."), as_json: bool = JSON) -> None:
    """Every change of a route's split, oldest first: create, split, promote, rollback, delete, and who made it.

    Example: fmstack ab history smollm2-135m-instruct
    """
    show_rows(_routes().history(route), CHANGE_COLUMNS, as_json)


@ab_app.command("report")
def ab_report(
    route: str = typer.Argument(..., help="The route."),
    since: str = SINCE,
    baseline: str = typer.Option(None, "--baseline", help="Compare with this variant (default: the largest share)."),
    as_json: bool = JSON,
) -> None:
    """Compare a route's variants on the traffic they served: latency, TTFT, cost, errors, thumbs, review approval
    and judge scores, each with a 95 % bootstrap interval, and a verdict per variant.

    Example: fmstack ab report smollm2-135m-instruct --since 7d
    """
    from fmstack.app.ab import build_report

    start = _moment(since)
    routes = _routes()
    report = build_report(routes.sessions, routes.get(route), start, baseline=baseline)
    if as_json:
        print_json(report.to_dict())
        return
    columns = [Col("metric", lambda m: m.label, no_wrap=True)]
    for v in report.variants:
        columns.append(Col(f"{v.name} ({v.weight} %)", lambda m, v=v: _estimate(m, v.estimates[m.key])))
    console.print(f"route [cyan]{route}[/], baseline [cyan]{report.baseline}[/]", soft_wrap=True)
    show_rows(report.metrics, columns, False)
    for sentence in report.verdicts().values():
        console.print(sentence, soft_wrap=True)


def _estimate(metric, e) -> str:
    if not e.n:
        return "-"
    unit = {"pts": " %", "ms": " ms"}.get(metric.unit, "")
    return f"{metric.format(e.mean)}{unit} [{metric.format(e.low)}, {metric.format(e.high)}] n={e.n}"


@ab_app.command("promote")
def ab_promote(
    route: str = typer.Argument(..., help="The route."),
    variant: str = typer.Argument(..., help="The variant that gets all of its traffic."),
    gate: bool = typer.Option(False, "--gate", help="Refuse unless the report supports it (enough data, no worse)."),
    min_requests: int = typer.Option(30, "--min-requests", min=1, help="Answered requests each side needs (gate)."),
    since: str = SINCE,
) -> None:
    """Send all of a route's traffic to one variant; with --gate only if it is no worse than the baseline on any
    metric, with enough answered requests on both sides.

    Example: fmstack ab promote smollm2-135m-instruct smollm2-priced --gate --min-requests 50
    """
    from fmstack.app.ab import promote

    start = _moment(since)
    _done("promoted", promote(_routes(), route, variant, _actor(), gate, min_requests, start))


@ab_app.command("rollback")
def ab_rollback(route: str = typer.Argument(..., help="The route.")) -> None:
    """Undo the latest split or promotion not yet undone: the shares before it come back.

    Example: fmstack ab rollback smollm2-135m-instruct
    """
    _done("rolled back", _routes().rollback(route, _actor()))


@ab_app.command("delete")
def ab_delete(route: str = typer.Argument(..., help="The route.")) -> None:
    """Stop routing ROUTE: requests for it go to the model of that name again (if there is one). Its history and
    its traces stay.

    Example: fmstack ab delete smollm2-135m-instruct
    """
    _routes().delete(route, _actor())
    console.print(f"deleted route [cyan]{route}[/]", soft_wrap=True)
