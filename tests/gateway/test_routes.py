"""Route resolution on a real store, no generation: sticky assignment, the split's shares over many users, random
draws without a user, ramping, and what the call's trace records."""

from __future__ import annotations

import random
from collections import Counter
from types import SimpleNamespace

import pytest

from fmstack.gateway.routes import BUCKETS, Route, Router, Variant, bucket
from tests.app.ab.helpers import A, B, routes

SPLIT = Route("shop", (Variant(A, A, 90), Variant(B, B, 10)))


def shares(route: Route, users: list[str | None], draw=random.random) -> dict[str, float]:
    counts = Counter(route.pick(u, draw).name for u in users)
    return {name: n / len(users) for name, n in counts.items()}


def test_a_user_always_gets_the_same_variant():
    for user in (f"user-{i}" for i in range(200)):
        assert len({SPLIT.pick(user).name for _ in range(5)}) == 1


def test_the_split_hits_its_weights_over_many_users():
    # 20,000 users: the share of a 10 % arm has a standard deviation of 0.2 points; 1 point is 5 of them
    got = shares(SPLIT, [f"user-{i}" for i in range(20_000)])
    assert got[A] == pytest.approx(0.90, abs=0.01) and got[B] == pytest.approx(0.10, abs=0.01)
    thirds = Route("r", (Variant("x", A, 33), Variant("y", A, 33), Variant("z", B, 34)))
    got = shares(thirds, [f"u{i}" for i in range(20_000)])
    assert all(got[n] == pytest.approx(w, abs=0.015) for n, w in (("x", 0.33), ("y", 0.33), ("z", 0.34)))


def test_without_a_user_each_request_is_drawn_at_random():
    rng = random.Random(7)
    got = shares(SPLIT, [None] * 20_000, rng.random)
    assert got[B] == pytest.approx(0.10, abs=0.01)
    assert len({SPLIT.pick(None, rng.random).name for _ in range(200)}) == 2  # not sticky: both come up


def test_a_zero_weight_variant_is_never_picked():
    route = Route("shop", (Variant(A, A, 0), Variant(B, B, 100)))
    assert {route.pick(f"u{i}").name for i in range(2000)} == {B}


def test_ramping_the_last_variant_up_keeps_its_users():
    users = [f"user-{i}" for i in range(5000)]
    before = {u for u in users if SPLIT.pick(u).name == B}
    after = {u for u in users if Route("shop", (Variant(A, A, 50), Variant(B, B, 50))).pick(u).name == B}
    assert before < after


def test_buckets_depend_on_the_route_so_routes_split_independently():
    assert bucket("shop", "ann") == bucket("shop", "ann")
    users = [f"user-{i}" for i in range(2000)]
    same = sum(bucket("shop", u) * 10 // BUCKETS == bucket("support", u) * 10 // BUCKETS for u in users)
    assert same / len(users) == pytest.approx(0.1, abs=0.03)


def call(**row) -> SimpleNamespace:
    return SimpleNamespace(row={"user": None} | row)


def test_the_router_answers_a_route_with_a_variant_and_records_both(home):
    store = routes(home)
    store.create("shop", {A: 50, B: 50})
    router = Router(store.sessions)
    c = call(user="ann")
    model = router.route(c, "shop")
    assert model in (A, B) and c.row["route"] == "shop" and c.row["variant"] == model
    assert all(router.route(call(user="ann"), "shop") == model for _ in range(10))
    plain = call(user="ann")
    assert router.route(plain, A) == A and "route" not in plain.row  # not a route: untouched
    evaluation = call(user="ann", eval_run_id="run-1")
    assert router.route(evaluation, "shop") == "shop" and "route" not in evaluation.row  # evals name exact models
    routed = call(route="shop", variant=A)
    assert router.route(routed, "shop") == "shop" and routed.row["variant"] == A  # already resolved by the caller


def test_a_change_reaches_the_router_after_invalidate_or_its_ttl(home):
    store = routes(home)
    store.create("shop", {A: 100, B: 0})
    router = Router(store.sessions, ttl=3600)
    assert router.route(call(user="ann"), "shop") == A
    store.promote("shop", B)
    assert router.route(call(user="ann"), "shop") == A  # cached
    router.invalidate()
    assert router.route(call(user="ann"), "shop") == B
    fresh = Router(store.sessions, ttl=0)
    store.rollback("shop")
    assert fresh.route(call(user="ann"), "shop") == A  # ttl 0: every call reads the store
