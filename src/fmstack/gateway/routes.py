"""A/B routes at serving time: a request for a route's public name is answered by one of its variants.

Assignment is sticky by the request's `user`: a hash of the route and the user picks a bucket in 0..9999, and the
variants, in their fixed order, own consecutive ranges sized by their weights. A person therefore sees one variant
for as long as the split stands, and raising the last variant's share only moves people towards it. A request
without a user draws a variant at random.

A route whose name is a stored prompt's alias (`capitals@production`) splits that alias between prompt versions
(`capitals@1`, `capitals@2`): `prompt_variant` picks one for the caller that renders prompts (the server's
`/v1/prompts/{ref}/chat/completions`, `fmstack.app.prompts.complete`); the model the picked version names is then
not routed again. Model routes and prompt routes share one namespace, and model names never contain `@`.

Routes are read from the store at most once a second, so a split changed by `fmstack ab` in another process takes
effect within a second, with no restart. Eval runs are never routed: they name the exact model they evaluate.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import selectinload, sessionmaker

from fmstack.core.store.schema import AbRoute

if TYPE_CHECKING:
    from fmstack.gateway.call import Call

BUCKETS = 10_000


@dataclass(frozen=True)
class Variant:
    name: str  # what the trace records as `variant`
    model: str
    weight: int  # percent
    prompt: str | None = None  # a prompt route's variant: the stored prompt reference it renders


def is_prompt_route(name: str) -> bool:
    """A prompt route's name is a prompt alias, `NAME@ALIAS`; a model route's never has an `@`."""
    return "@" in name


@dataclass(frozen=True)
class Route:
    name: str
    variants: tuple[Variant, ...]

    def pick(self, user: str | None, draw: Callable[[], float] = random.random) -> Variant:
        """The variant that answers `user` (sticky), or a random one when there is no user."""
        point = bucket(self.name, user) if user else int(draw() * BUCKETS)
        total = sum(v.weight for v in self.variants)
        edges = itertools.accumulate(v.weight for v in self.variants)
        return next(v for v, edge in zip(self.variants, edges, strict=True) if point * total < edge * BUCKETS)


def bucket(route: str, user: str) -> int:
    """A user's fixed place in 0..9999 on one route; the route is in the hash so that routes split independently."""
    digest = hashlib.sha256(f"{route}\x00{user}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


class Router:
    """The store's routes, cached for `ttl` seconds; `invalidate` after a change made in this process."""

    def __init__(self, sessions: sessionmaker, ttl: float = 1.0):
        self.sessions = sessions
        self.ttl = ttl
        self._routes: dict[str, Route] = {}
        self._loaded_at = -float("inf")
        self._lock = threading.Lock()

    def routes(self) -> dict[str, Route]:
        with self._lock:
            if time.monotonic() - self._loaded_at > self.ttl:
                self._routes = self._load()
                self._loaded_at = time.monotonic()
            return self._routes

    def invalidate(self) -> None:
        with self._lock:
            self._loaded_at = -float("inf")

    def route(self, call: Call, model: str) -> str:
        """The model that answers a request for `model`: itself, or the variant its route picks, recorded on the
        call's trace (route and variant). A call that names its route already (a caller resolved it) or belongs to
        an eval run is left as it is."""
        if call.row.get("eval_run_id") or call.row.get("route"):
            return model
        route = self.routes().get(model)
        if route is None or is_prompt_route(route.name):
            return model
        variant = route.pick(call.row.get("user"))
        call.row.update(route=route.name, variant=variant.name)
        return variant.model

    def prompt_variant(self, ref: str, user: str | None) -> tuple[str, Variant] | None:
        """For a prompt reference that names a prompt route (`capitals@production`): the route's name and the
        variant that answers `user` (sticky; random without one). None for any other reference."""
        route = self.routes().get(ref.strip()) if is_prompt_route(ref) else None
        if route is None:
            return None
        return route.name, route.pick(user)

    def _load(self) -> dict[str, Route]:
        with self.sessions() as session:
            rows = session.scalars(select(AbRoute).options(selectinload(AbRoute.variants)))
            return {
                r.name: Route(r.name, tuple(Variant(v.name, v.model, v.weight, v.prompt) for v in r.variants))
                for r in rows
            }
