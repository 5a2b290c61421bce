"""Promotion, optionally gated on the report: a variant gets all of a route's traffic only if the numbers allow it.

The gate compares the candidate with the baseline (the variant with the largest share now) on every metric of the
report and refuses when either side has too few answered requests or the candidate is worse on anything, with the
reasons. A promotion that passed keeps its comparisons in the change history, so "why was this promoted?" has an
answer later.
"""

from __future__ import annotations

from datetime import datetime

from fmstack.app.ab.report import build_report
from fmstack.app.ab.routes import RouteInfo, RouteStore
from fmstack.core.errors import FmstackError

MIN_REQUESTS = 30


class GateFailed(FmstackError):
    status = 409
    type = "conflict_error"


def promote(
    routes: RouteStore,
    route: str,
    variant: str,
    actor: str | None = None,
    gate: bool = False,
    min_requests: int = MIN_REQUESTS,
    since: datetime | None = None,
) -> RouteInfo:
    """Send all of `route` to `variant`; with `gate`, only if the report since `since` supports it."""
    if not gate:
        return routes.promote(route, variant, actor)
    report = build_report(routes.sessions, routes.get(route), since)
    if variant not in {v.name for v in report.variants}:
        return routes.promote(route, variant, actor)  # names the variants the route has
    if reasons := report.gate(variant, min_requests):
        raise GateFailed(
            f"gate: not promoting {variant} on {route}: {'; '.join(reasons)}. Promote without --gate to override.",
            param="gate",
            code="gate_failed",
        )
    evidence = {
        "baseline": report.baseline,
        "min_requests": min_requests,
        "comparisons": [c for c in report.to_dict()["comparisons"] if c["variant"] == variant],
    }
    return routes.promote(route, variant, actor, evidence)
