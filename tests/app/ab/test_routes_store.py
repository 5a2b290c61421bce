"""Routes in the store: every change recorded (create, split, promote, rollback, delete), bad input refused with
the field named and nothing half-written."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from fmstack.app.ab import GateFailed, promote
from fmstack.app.prompts import PromptStore
from fmstack.core.errors import FmstackError, NotFound
from fmstack.core.store.schema import AbChange, AbRoute, AbVariant
from tests.app.ab.helpers import A, B, add_trace, routes


def rows(store) -> tuple[int, int, int]:
    with store.sessions() as s:
        return tuple(s.scalar(select(func.count()).select_from(t)) for t in (AbRoute, AbVariant, AbChange))


def test_promote_and_rollback_are_recorded_and_undone_in_order(home):
    store = routes(home)
    store.create("shop", {A: 90, B: 10}, actor="ann")
    assert store.promote("shop", B, actor="bob").weights == {A: 0, B: 100}
    assert store.split("shop", {A: 50, B: 50}).weights == {A: 50, B: 50}
    assert store.rollback("shop").weights == {A: 0, B: 100}  # undoes the split
    assert store.rollback("shop").weights == {A: 90, B: 10}  # then the promotion
    with pytest.raises(FmstackError, match="no split or promotion left") as err:
        store.rollback("shop")
    assert err.value.param == "route"
    history = store.history("shop")
    assert [(c.action, c.undoes) for c in history] == [
        ("create", None), ("promote", None), ("split", None), ("rollback", 3), ("rollback", 2)
    ]
    assert (history[0].before, history[0].after, history[0].actor) == (None, {A: 90, B: 10}, "ann")
    assert (history[1].before, history[1].after, history[1].actor) == ({A: 90, B: 10}, {A: 0, B: 100}, "bob")


def test_promoting_a_prompt_version_moves_the_alias_and_a_rollback_moves_it_back(home):
    store = routes(home)
    prompts = PromptStore(store.sessions)
    for text in ("Capital of {{ country }}?", "Name the capital of {{ country }}.", "Which city rules {{ country }}?"):
        prompts.save("capitals", {"user": text})
    prompts.set_alias("capitals", "production", 1)
    store.create("capitals@production", {"capitals@1": 80, "capitals@2": 20})
    store.promote("capitals@production", "capitals@v2")
    assert prompts.aliases("capitals") == {"production": 2}
    store.split("capitals@production", {"capitals@2": 50, "capitals@3": 50})
    assert prompts.aliases("capitals") == {"production": 2}  # a split moves nothing
    store.rollback("capitals@production")  # the split
    store.rollback("capitals@production")  # the promotion: the alias goes back with the weights
    assert prompts.aliases("capitals") == {"production": 1}
    assert [(m.from_version, m.to_version) for m in prompts.moves("capitals")][-2:] == [(1, 2), (2, 1)]

    store.create("capitals@beta", {"capitals@1": 50, "capitals@3": 50})  # the alias need not exist yet
    store.promote("capitals@beta", "capitals@3")
    assert prompts.aliases("capitals") == {"beta": 3, "production": 1}
    store.rollback("capitals@beta")
    assert prompts.aliases("capitals") == {"production": 1}  # it was new: gone again


def test_a_split_adds_a_model_at_the_end_and_keeps_the_others_at_zero(home):
    store = routes(home)
    store.create("shop", {A: 100})
    route = store.split("shop", {B: 100})
    assert [(v.name, v.weight) for v in route.variants] == [(A, 0), (B, 100)]
    assert route.split == f"{B}=100"
    assert store.rollback("shop").weights == {A: 100, B: 0}


def test_delete_stops_the_route_and_keeps_its_history(home):
    store = routes(home)
    store.create("shop", {A: 100})
    store.delete("shop")
    assert store.list() == []
    assert [c.action for c in store.history("shop")] == ["create", "delete"]
    store.create("shop", {B: 100})  # the name is free again; a rollback never reaches past the new creation
    with pytest.raises(FmstackError, match="no split or promotion left"):
        store.rollback("shop")


@pytest.mark.parametrize(
    ("weights", "param", "words"),
    [
        ({A: 90, B: 20}, "weight", "sum to 110"),
        ({A: 90, "nope": 10}, "variant", "'nope' is not a chat model"),
        ({A: 90, "all-minilm-l6-v2": 10}, "variant", "not a chat model"),
        ({A: 101, B: -1}, "weight", "whole percent"),
        ({}, "variants", "at least one"),
    ],
)
def test_bad_splits_name_the_field_and_write_nothing(home, weights, param, words):
    store = routes(home)
    with pytest.raises(FmstackError, match=words) as err:
        store.create("shop", weights)
    assert err.value.param == param and err.value.status == 400
    assert rows(store) == (0, 0, 0)
    store.create("shop", {A: 100})
    before = rows(store)
    with pytest.raises(FmstackError):
        store.split("shop", weights)
    assert rows(store) == before and store.get("shop").weights == {A: 100}


def test_bad_names_and_targets(home):
    store = routes(home)
    with pytest.raises(FmstackError) as err:
        store.create("bad name", {A: 100})
    assert err.value.param == "route"
    store.create("shop", {A: 90, B: 10})
    with pytest.raises(FmstackError, match="exists") as err:
        store.create("shop", {A: 100})
    assert err.value.status == 409
    with pytest.raises(NotFound, match="no route 'nope' \\(routes: shop\\)"):
        store.promote("nope", A)
    with pytest.raises(FmstackError, match="no variant 'x'") as err:
        store.promote("shop", "x")
    assert err.value.param == "variant"
    store.promote("shop", B)
    with pytest.raises(FmstackError, match="already serves all"):
        store.promote("shop", B)
    assert [c.action for c in store.history("shop")] == ["create", "promote"]


def test_a_gated_promotion_needs_enough_data_and_no_regression(home):
    store = routes(home)
    store.create("shop", {A: 90, B: 10})
    for i in range(6):
        add_trace(store.sessions, A, latency=100 + i)
        add_trace(store.sessions, B, latency=100 + i)
    with pytest.raises(GateFailed, match=f"{A} has 6 answered requests; the gate needs 30") as err:
        promote(store, "shop", B, gate=True)
    assert err.value.status == 409 and store.get("shop").weights == {A: 90, B: 10}
    route = promote(store, "shop", B, gate=True, min_requests=5)
    assert route.weights == {A: 0, B: 100}
    gate = store.history("shop")[-1].gate
    assert gate["baseline"] == A and gate["min_requests"] == 5
    assert {c["metric"]: c["outcome"] for c in gate["comparisons"]}["latency"] == "same"
    store.rollback("shop")
    for i in range(6):
        add_trace(store.sessions, B, latency=900 + i)  # the candidate is now clearly slower
    with pytest.raises(GateFailed, match="worse on latency"):
        promote(store, "shop", B, gate=True, min_requests=5)
