"""A/B routes in the store: create a split, change it, promote a variant, roll back, delete; every change recorded.

Each operation checks everything before it writes and writes in one transaction, so bad input (an unknown model,
weights that do not sum to 100, a variant the route does not have) leaves the store as it was. Variants are never
dropped from a live route, only set to weight 0: their order fixes every user's sticky bucket, and a rollback can
always restore the weights it undoes.

A route whose name is a stored prompt's alias (`capitals@production`) is a prompt route: its variants are versions
(or other aliases) of that prompt, `capitals@1`, `capitals@2`, and requests through the alias are split between
them (the gateway's `Router.prompt_variant`). Promoting a version also moves the alias to it (recorded with the
alias's history, undone by a rollback), so the alias keeps serving the promoted version once the route is deleted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from fmstack.app.ab.times import utc
from fmstack.app.prompts import PromptError, PromptStore, parse_ref
from fmstack.core.config import Settings, get_settings
from fmstack.core.errors import InvalidRequest, NotFound
from fmstack.core.registry import Registry
from fmstack.core.store import open_store
from fmstack.core.store.schema import AbChange, AbRoute, AbVariant, PromptAliasMove, utcnow
from fmstack.gateway.routes import is_prompt_route

NAME = re.compile(r"^[A-Za-z0-9][\w.:-]{0,199}$")
UNDOABLE = ("split", "promote")


class RouteExists(InvalidRequest):
    status = 409
    type = "conflict_error"


@dataclass(frozen=True)
class VariantInfo:
    name: str
    model: str  # a prompt variant: the model its version named when it joined ("" when none)
    weight: int
    prompt: str | None = None  # a prompt route's variant: the prompt reference it renders


@dataclass(frozen=True)
class RouteInfo:
    name: str
    created_at: datetime
    updated_at: datetime
    variants: list[VariantInfo]

    @classmethod
    def of(cls, row: AbRoute) -> RouteInfo:
        variants = [VariantInfo(v.name, v.model, v.weight, v.prompt) for v in row.variants]
        return cls(row.name, utc(row.created_at), utc(row.updated_at), variants)

    @property
    def weights(self) -> dict[str, int]:
        return {v.name: v.weight for v in self.variants}

    @property
    def split(self) -> str:
        """The live split as people write it: `a=90 b=10` (weight-0 variants left out)."""
        return " ".join(f"{v.name}={v.weight}" for v in self.variants if v.weight)


@dataclass(frozen=True)
class Change:
    id: int
    created_at: datetime
    route: str
    action: str  # create | split | promote | rollback | delete
    before: dict[str, int] | None
    after: dict[str, int] | None
    undoes: int | None
    actor: str | None
    gate: dict[str, Any] | None

    @classmethod
    def of(cls, row: AbChange) -> Change:
        fields = (row.id, utc(row.created_at), row.route, row.action, row.before, row.after)
        return cls(*fields, row.undoes, row.actor, row.gate)


class RouteStore:
    """Routes on a store, checked against a model registry."""

    def __init__(self, sessions: sessionmaker, registry: Registry):
        self.sessions = sessions
        self.registry = registry

    @classmethod
    def open(cls, settings: Settings | None = None) -> RouteStore:
        settings = settings or get_settings()
        return cls(open_store(settings), Registry(settings))

    def list(self) -> list[RouteInfo]:
        with self.sessions() as session:
            rows = session.scalars(select(AbRoute).options(selectinload(AbRoute.variants)).order_by(AbRoute.name))
            return [RouteInfo.of(r) for r in rows]

    def get(self, name: str) -> RouteInfo:
        with self.sessions() as session:
            return RouteInfo.of(_route(session, name))

    def history(self, name: str) -> list[Change]:
        """Every change of the route, oldest first (a deleted route's too)."""
        with self.sessions() as session:
            rows = list(session.scalars(select(AbChange).where(AbChange.route == name).order_by(AbChange.id)))
            if not rows:
                _route(session, name)  # raises NotFound with the known routes
            return [Change.of(r) for r in rows]

    def create(self, name: str, weights: dict[str, int], actor: str | None = None) -> RouteInfo:
        """A new route splitting `name` between registry models by percent, e.g. {"a": 90, "b": 10}; or, when
        `name` is a prompt alias (`capitals@production`), between versions of that prompt ({"capitals@1": 90,
        "capitals@2": 10})."""
        name = (name or "").strip()
        if is_prompt_route(name):
            self._check_prompt_route(name)
        elif not NAME.match(name):
            raise InvalidRequest(
                f"route: '{name}' is not a route name; use letters, digits and . _ : - (up to 200), or a prompt "
                "alias, NAME@ALIAS.",
                param="route",
            )
        targets = self._check(name, weights)
        weights = {variant: weights[given] for variant, (given, _, _) in targets.items()}
        with self.sessions.begin() as session:
            if session.get(AbRoute, name) is not None:
                raise RouteExists(
                    f"route: '{name}' exists; change its split with `fmstack ab split {name}`.", param="route"
                )
            now = utcnow()
            row = AbRoute(name=name, created_at=now, updated_at=now)
            row.variants = [
                AbVariant(position=i, name=variant, model=model, prompt=prompt, weight=weights[variant])
                for i, (variant, (_, model, prompt)) in enumerate(targets.items())
            ]
            session.add(row)
            _record(session, name, "create", None, dict(weights), actor)
            session.flush()
            return RouteInfo.of(row)

    def split(self, name: str, weights: dict[str, int], actor: str | None = None) -> RouteInfo:
        """A new split: the variants given get these weights (new ones join at the end), the others weight 0."""
        with self.sessions() as session:
            _route(session, name)  # an unknown route is named before its variants are checked
        targets = self._check(name, weights)
        weights = {variant: weights[given] for variant, (given, _, _) in targets.items()}
        with self.sessions.begin() as session:
            row = _route(session, name, lock=True)
            known = {v.name for v in row.variants}
            for variant, (_, model, prompt) in targets.items():
                if variant not in known:
                    position = len(row.variants)
                    row.variants.append(
                        AbVariant(position=position, name=variant, model=model, prompt=prompt, weight=0)
                    )
            return self._apply(session, row, {v.name: weights.get(v.name, 0) for v in row.variants}, "split", actor)

    def promote(
        self, name: str, variant: str, actor: str | None = None, gate: dict[str, Any] | None = None
    ) -> RouteInfo:
        """All traffic to `variant`; `gate` is the evidence a gated promotion passed, kept with the change."""
        if is_prompt_route(name):
            variant = _prompt_variant_name(variant)
        with self.sessions.begin() as session:
            row = _route(session, name, lock=True)
            names = [v.name for v in row.variants]
            if variant not in names:
                raise InvalidRequest(
                    f"variant: route '{name}' has no variant '{variant}'; its variants: {', '.join(names)}.",
                    param="variant",
                )
            if {v.name: v.weight for v in row.variants}[variant] == 100:
                raise InvalidRequest(f"variant: '{variant}' already serves all of '{name}'.", param="variant")
            weights = {n: 100 if n == variant else 0 for n in names}
            move = self._move_prompt_alias(session, name, variant) if is_prompt_route(name) else None
            return self._apply(session, row, weights, "promote", actor, gate, alias_move=move)

    def rollback(self, name: str, actor: str | None = None) -> RouteInfo:
        """Undo the latest split or promotion not yet undone: its weights before come back."""
        with self.sessions.begin() as session:
            row = _route(session, name, lock=True)
            target = _last_undoable(session, name)
            if target is None:
                raise InvalidRequest(f"route: '{name}' has no split or promotion left to roll back.", param="route")
            weights = {v.name: (target.before or {}).get(v.name, 0) for v in row.variants}
            move = self._undo_alias_move(session, target.alias_move) if target.alias_move is not None else None
            return self._apply(session, row, weights, "rollback", actor, undoes=target.id, alias_move=move)

    def _move_prompt_alias(self, session: Session, route: str, variant: str) -> int | None:
        """A prompt route's promotion also points its alias at the promoted version, so the alias serves it once
        the route is gone (`capitals@production` -> 2); the id of the recorded move, None when it was there."""
        prompts = PromptStore(self.sessions)
        name, _, alias = route.partition("@")
        try:
            version = prompts.version_of(session, variant)
        except (PromptError, NotFound) as exc:
            raise InvalidRequest(f"variant: {exc.message}", param="variant") from None
        move = prompts.move_alias(session, name, alias, version)
        return move.id if move is not None else None

    def _undo_alias_move(self, session: Session, move_id: int) -> int | None:
        """Rolling back a prompt route's promotion points its alias back where it was (removed if it was new)."""
        move = session.get(PromptAliasMove, move_id)
        if move is None:
            return None
        back = PromptStore(self.sessions).move_alias(session, move.name, move.alias, move.from_version)
        return back.id if back is not None else None

    def delete(self, name: str, actor: str | None = None) -> None:
        """Stop routing `name` (requests for it then go to the model of that name, if any); its history stays."""
        with self.sessions.begin() as session:
            row = _route(session, name, lock=True)
            _record(session, name, "delete", {v.name: v.weight for v in row.variants}, None, actor)
            session.delete(row)

    def _apply(
        self,
        session: Session,
        row: AbRoute,
        weights: dict[str, int],
        action: str,
        actor: str | None,
        gate: dict[str, Any] | None = None,
        undoes: int | None = None,
        alias_move: int | None = None,
    ) -> RouteInfo:
        before = {v.name: v.weight for v in row.variants}
        for v in row.variants:
            v.weight = weights[v.name]
        row.updated_at = utcnow()
        _record(session, row.name, action, before, weights, actor, gate, undoes, alias_move)
        session.flush()
        return RouteInfo.of(row)

    def _check(self, route: str, weights: dict[str, int]) -> dict[str, tuple[str, str, str | None]]:
        """Every weight 0-100, the weights summing to 100, and every variant a chat model on this machine (a
        prompt route: a version of its prompt). Each variant's name as stored, with the name it was given, its
        model and its prompt reference."""
        if not weights:
            raise InvalidRequest("variants: give at least one, as MODEL=PERCENT.", param="variants")
        targets: dict[str, tuple[str, str, str | None]] = {}
        for given, weight in weights.items():
            if is_prompt_route(route):
                variant, model = self._prompt_target(route, given)
                prompt: str | None = variant
            else:
                variant, model, prompt = given, self._model_target(given), None
            if variant in targets:
                raise InvalidRequest(f"variants: '{variant}' is given twice.", param="variants")
            if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
                raise InvalidRequest(f"weight: '{given}={weight}' must be a whole percent, 0-100.", param="weight")
            targets[variant] = (given, model, prompt)
        if (total := sum(weights.values())) != 100:
            split = ", ".join(f"{m}={w}" for m, w in weights.items())
            raise InvalidRequest(f"weight: the weights sum to {total} ({split}); they must sum to 100.", param="weight")
        return targets

    def _model_target(self, model: str) -> str:
        spec = self.registry.specs.get(model)
        if spec is None or spec.kind != "chat":
            chat = ", ".join(sorted(s.name for s in self.registry if s.kind == "chat"))
            hint = " (a prompt route's name is NAME@ALIAS)" if "@" in model else ""
            raise InvalidRequest(
                f"variant: '{model}' is not a chat model in the registry{hint}; known: {chat}.", param="variant"
            )
        if not spec.available():
            raise InvalidRequest(
                f"variant: the files of '{model}' are not on this machine ({spec.source_label()}).", param="variant"
            )
        return model

    def _prompt_target(self, route: str, given: str) -> tuple[str, str]:
        """A prompt route's variant: a version or alias of the route's prompt that resolves now; its stored name
        (`capitals@v2` is `capitals@2`) and the model the version names."""
        prompt_name = route.partition("@")[0]
        try:
            ref = parse_ref(given)
        except PromptError:
            ref = None
        if ref is None or ref.name != prompt_name or (ref.version is None and ref.alias is None):
            raise InvalidRequest(
                f"variant: '{given}' is not a version of the prompt '{prompt_name}'; a prompt route's variants are "
                f"{prompt_name}@VERSION or {prompt_name}@ALIAS, e.g. {prompt_name}@2.",
                param="variant",
            )
        try:
            stored = PromptStore(self.sessions).get(ref)
        except (PromptError, NotFound) as exc:
            raise InvalidRequest(f"variant: {exc.message}", param="variant") from None
        return str(ref), str(stored.params.get("model") or "")

    def _check_prompt_route(self, name: str) -> None:
        """A prompt route's name: an alias of a stored prompt, `NAME@ALIAS` (the alias need not exist yet)."""
        try:
            ref = parse_ref(name)
        except PromptError:
            ref = None
        if ref is None or ref.alias is None or str(ref) != name:
            raise InvalidRequest(
                f"route: '{name}' is not a prompt alias; a prompt route is named NAME@ALIAS, e.g. capitals@production.",
                param="route",
            )
        try:
            PromptStore(self.sessions).versions(ref.name)
        except (PromptError, NotFound) as exc:
            raise InvalidRequest(f"route: {exc.message}", param="route") from None


def _prompt_variant_name(variant: str) -> str:
    """`capitals@v2` as stored: `capitals@2`."""
    try:
        return str(parse_ref(variant))
    except PromptError:
        return variant


def _route(session: Session, name: str, lock: bool = False) -> AbRoute:
    query = select(AbRoute).where(AbRoute.name == name).options(selectinload(AbRoute.variants))
    row = session.scalar(query.with_for_update() if lock else query)
    if row is None:
        known = ", ".join(session.scalars(select(AbRoute.name).order_by(AbRoute.name))) or "none yet"
        message = f"route: no route '{name}' (routes: {known}). Create one with `fmstack ab create`."
        raise NotFound(message, param="route")
    return row


def _last_undoable(session: Session, name: str) -> AbChange | None:
    """The latest split or promotion since the route was (last) created that no rollback has undone."""
    changes = list(session.scalars(select(AbChange).where(AbChange.route == name).order_by(AbChange.id.desc())))
    undone = {c.undoes for c in changes if c.action == "rollback"}
    for change in changes:
        if change.action == "create":
            return None
        if change.action in UNDOABLE and change.id not in undone:
            return change
    return None


def _record(
    session: Session,
    route: str,
    action: str,
    before: dict[str, int] | None,
    after: dict[str, int] | None,
    actor: str | None,
    gate: dict[str, Any] | None = None,
    undoes: int | None = None,
    alias_move: int | None = None,
) -> None:
    session.add(
        AbChange(
            route=route, action=action, before=before, after=after, actor=actor, gate=gate, undoes=undoes,
            alias_move=alias_move,
        )
    )
