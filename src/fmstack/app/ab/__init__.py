"""A/B serving and the dashboard: routes that split a public name between variants, the report that compares the
variants on real traffic, promotion and rollback (recorded, optionally gated on the report), and the dashboard's
aggregates of the store.

```python
from fmstack.app.ab import RouteStore, build_report, promote

routes = RouteStore.open()
routes.create("shop", {"smollm2-135m-instruct": 90, "smollm2-shop-v2": 10})
# ... requests with "model": "shop" are answered by one variant each (sticky by `user`), traced with both names
report = build_report(routes.sessions, routes.get("shop"))
print(report.verdicts())
promote(routes, "shop", "smollm2-shop-v2", gate=True)   # refused, with the reasons, if the numbers do not allow it
routes.rollback("shop")
```

`routes` (the store's routes and their history), `report` and `stats` (the comparison), `gate` (promotion),
`times` (UTC), `dashboard` (`overview`: per app and per route/variant aggregates over a time range). Serving itself
is the gateway's (`fmstack.gateway.routes`): every caller of the gateway is routed.

Layer: imports `fmstack.core` and, for the review numbers, `fmstack.app.review`; the server and the CLI import it.
"""

from fmstack.app.ab.dashboard import overview
from fmstack.app.ab.gate import GateFailed, promote
from fmstack.app.ab.report import ABReport, build_report
from fmstack.app.ab.routes import Change, RouteInfo, RouteStore, VariantInfo

__all__ = [
    "ABReport",
    "Change",
    "GateFailed",
    "RouteInfo",
    "RouteStore",
    "VariantInfo",
    "build_report",
    "overview",
    "promote",
]
