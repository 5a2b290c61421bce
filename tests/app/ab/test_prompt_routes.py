"""A/B routes over prompt versions: a route named by a stored prompt's alias (`greet@production`) splits it between
versions of the prompt, sticky by user; bad input names the field and writes nothing; promotion and rollback work
as on model routes; and `prompts.complete` in Python is routed and traced like the server's endpoint."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from sqlalchemy import func, select

from fmstack.app.prompts import Prompts, PromptStore
from fmstack.core.config import get_settings
from fmstack.core.errors import FmstackError
from fmstack.core.store.schema import AbChange, AbRoute, AbVariant, Trace
from fmstack.gateway.routes import Route, Router, Variant
from tests.app.ab.helpers import A, routes

ROUTE = "greet@production"
V1, V2 = "greet@1", "greet@2"
SPLIT = Route(ROUTE, (Variant(V1, A, 50, V1), Variant(V2, A, 50, V2)))


def users_of(variant: str, n: int = 3) -> list[str]:
    return [u for u in (f"user-{i}" for i in range(100)) if SPLIT.pick(u).name == variant][:n]


@pytest.fixture()
def store(home):
    store = routes(home)
    prompts = PromptStore(store.sessions)
    prompts.save("greet", {"user": "Say hello to {{ name }}.", "params": {"model": A, "max_tokens": 2}})
    prompts.save("greet", {"user": "Greet {{ name }} warmly.", "params": {"model": A, "max_tokens": 2}})
    prompts.set_alias("greet", "production", 1)
    return store


def counts(store) -> tuple[int, int, int]:
    with store.sessions() as s:
        return tuple(s.scalar(select(func.count()).select_from(t)) for t in (AbRoute, AbVariant, AbChange))


def test_a_prompt_alias_is_split_between_versions_sticky_by_user(store):
    created = store.create(ROUTE, {"greet@v1": 50, V2: 50}, actor="ann")  # `v1` is stored as `greet@1`
    assert created.split == f"{V1}=50 {V2}=50"
    assert [(v.name, v.prompt, v.model) for v in created.variants] == [(V1, V1, A), (V2, V2, A)]
    router = Router(store.sessions)
    for variant in (V1, V2):
        for user in users_of(variant):
            assert all(router.prompt_variant(ROUTE, user) == (ROUTE, SPLIT.pick(user)) for _ in range(3))
            assert router.prompt_variant(ROUTE, user)[1].prompt == variant
    assert {router.prompt_variant(ROUTE, None)[1].name for _ in range(60)} == {V1, V2}  # no user: random
    assert router.prompt_variant("greet@staging", "ann") is None and router.prompt_variant("greet", "ann") is None
    model_call = SimpleNamespace(row={"user": "ann"})
    assert router.route(model_call, ROUTE) == ROUTE and "route" not in model_call.row  # never a model route


def test_promote_split_and_rollback_a_prompt_route(store):
    store.create(ROUTE, {V1: 90, V2: 10})
    assert store.promote(ROUTE, "greet@v2").weights == {V1: 0, V2: 100}
    assert store.split(ROUTE, {V1: 50, "greet@production": 50}).weights == {V1: 50, V2: 0, "greet@production": 50}
    assert store.rollback(ROUTE).weights == {V1: 0, V2: 100, "greet@production": 0}
    assert [c.action for c in store.history(ROUTE)] == ["create", "promote", "split", "rollback"]


@pytest.mark.parametrize(
    ("name", "weights", "param", "words"),
    [
        (ROUTE, {V1: 60, V2: 60}, "weight", "sum to 120"),
        (ROUTE, {V1: 50, "greet@9": 50}, "variant", "no version 9"),
        (ROUTE, {V1: 50, "other@1": 50}, "variant", "not a version of the prompt 'greet'"),
        (ROUTE, {V1: 50, "greet": 50}, "variant", "not a version of the prompt 'greet'"),
        (ROUTE, {V1: 50, A: 50}, "variant", "not a version of the prompt 'greet'"),
        (ROUTE, {V1: 50, "greet@v1": 50}, "variants", "given twice"),
        (ROUTE, {V1: 50, "greet@nope": 50}, "variant", "no alias 'nope'"),
        ("greet@2", {V1: 100}, "route", "not a prompt alias"),
        ("nobody@production", {V1: 100}, "route", "No prompt named 'nobody'"),
        ("shop", {V1: 100}, "variant", "a prompt route's name is NAME@ALIAS"),
    ],
)
def test_bad_prompt_routes_name_the_field_and_write_nothing(store, name, weights, param, words):
    with pytest.raises(FmstackError, match=words) as err:
        store.create(name, weights)
    assert (err.value.param, err.value.status) == (param, 400)
    assert counts(store) == (0, 0, 0)


@pytest.mark.slow
def test_prompts_complete_in_python_is_routed_and_traced(store):
    store.create(ROUTE, {V1: 50, V2: 50})
    prompts = Prompts(PromptStore(store.sessions), get_settings())
    try:
        for variant in (V1, V2):
            user = users_of(variant, 1)[0]
            done = prompts.complete(ROUTE, {"name": "Ann"}, user=user, temperature=0)
            assert done.prompt == variant
            with store.sessions() as s:
                trace = s.get(Trace, done.trace_id)
                columns = (trace.route, trace.variant, trace.user, trace.prompt_name, trace.prompt_version)
            assert columns == (ROUTE, variant, user, "greet", variant[-1])
    finally:
        prompts.close()
