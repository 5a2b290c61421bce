"""API keys in the store: hashed, shown once, scoped, revoked and rotated in one transaction each; bad input named;
rate limits and budgets read from the key's traces, so a new process (a restart) enforces them too."""

import hashlib
import math
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import inspect, select

from fmstack.core.config import get_settings
from fmstack.core.errors import FmstackError, NotFound
from fmstack.core.keys import (
    Budget,
    InsufficientQuota,
    InvalidApiKey,
    KeyExists,
    KeyStore,
    Limiter,
    RateLimited,
)
from fmstack.core.store import open_store
from fmstack.core.store.schema import ApiKey, Trace
from tests.core.test_migration_0003 import alembic, engine_for
from tests.core.test_store import row

NOW = datetime(2026, 3, 14, 15, 9, 26, tzinfo=UTC)


@pytest.fixture()
def sessions(home):
    return open_store(get_settings())


@pytest.fixture()
def keys(sessions) -> KeyStore:
    return KeyStore(sessions)


class Clock:
    def __init__(self, now: datetime = NOW):
        self.now = now.timestamp()

    def __call__(self) -> float:
        return self.now


def add_traces(sessions, name: str, *calls: tuple[float, int, float]) -> None:
    """Traces of key `name`: (seconds before NOW, tokens, cost) each."""
    with sessions.begin() as session:
        for ago, tokens, cost in calls:
            at = NOW - timedelta(seconds=ago)
            fields = dict(created_at=at, key_name=name, prompt_tokens=tokens, completion_tokens=0, cost=cost)
            session.add(Trace(**row(0, **fields) | {"id": uuid.uuid4().hex}))


def test_the_store_keeps_a_hash_never_the_key(keys, sessions, home):
    new = keys.create("shop-bot", scopes=["inference"])
    assert new.secret.startswith("fmk_") and len(new.secret) == 47
    with sessions() as s:
        stored = s.scalar(select(ApiKey))
    assert stored.secret_hash == hashlib.sha256(new.secret.encode()).hexdigest()
    assert stored.prefix == new.secret[:12] and new.key.prefix == new.secret[:12]
    for path in home.glob("fmstack.db*"):  # the database and its WAL
        assert new.secret.encode() not in path.read_bytes()
    listed = keys.list()[0].to_dict()
    assert "secret" not in listed and new.secret not in str(listed) and stored.secret_hash not in str(listed)
    assert new.to_dict()["secret"] == new.secret  # the one result that carries it


def test_authenticate_gives_the_key_with_its_app_scopes_and_limits(keys):
    secret = keys.create("shop-bot", "shop", ["inference", "feedback"], rpm=60, tpm=2000, budget="5/day").secret
    key = keys.authenticate(secret)
    assert (key.name, key.app, key.rpm, key.tpm) == ("shop-bot", "shop", 60, 2000)
    assert key.scopes == ("inference", "feedback")
    assert key.budget == Budget(5.0, "day") and key.active
    assert key.allows("inference") and key.allows("feedback") and not key.allows("admin")
    assert keys.authenticate(keys.create("root", scopes=["admin"]).secret).allows("feedback")  # admin may do all
    assert keys.create("defaults").key.app == "defaults"


@pytest.mark.parametrize(
    "secret, says",
    [
        ("sk-not-ours", "format"),
        ("fmk_short", "format"),
        ("fmk_" + "a" * 42 + "!", "format"),
        ("fmk_" + "a" * 43, "Incorrect API key fmk_aaaaaaaa…"),
    ],
)
def test_a_bad_key_is_401_and_never_repeated_in_full(keys, secret, says):
    keys.create("shop-bot")
    with pytest.raises(InvalidApiKey) as caught:
        keys.authenticate(secret)
    assert caught.value.status == 401 and caught.value.code == "invalid_api_key" and says in caught.value.message
    assert secret not in caught.value.message or len(secret) < 12


def test_revoke_stops_a_key_at_once_and_keeps_its_name(keys):
    secret = keys.create("shop-bot").secret
    assert keys.revoke("shop-bot").revoked_at is not None
    with pytest.raises(InvalidApiKey, match="'shop-bot' was revoked"):
        keys.authenticate(secret)
    assert [k.to_dict()["status"] for k in keys.list()] == ["revoked"]
    with pytest.raises(KeyExists):
        keys.create("shop-bot")
    assert keys.exists()  # revoking every key does not turn authentication off


def test_rotate_gives_a_new_secret_to_the_same_key(keys):
    old = keys.create("shop-bot", "shop", ["inference"], rpm=5, budget="100/month")
    new = keys.rotate("shop-bot")
    assert new.secret != old.secret and new.key.rotated_at is not None
    with pytest.raises(InvalidApiKey, match="Incorrect API key"):
        keys.authenticate(old.secret)
    key = keys.authenticate(new.secret)
    assert (key.name, key.app, key.rpm, str(key.budget)) == ("shop-bot", "shop", 5, "100/month")
    keys.revoke("shop-bot")
    with pytest.raises(FmstackError, match="revoked: create a new key"):
        keys.rotate("shop-bot")
    with pytest.raises(NotFound, match="No key named 'nope'"):
        keys.rotate("nope")


@pytest.mark.parametrize(
    "fields, param, says",
    [
        ({"scopes": ["inference", "write"]}, "scopes", "Unknown scope 'write'"),
        ({"scopes": [" , "]}, "scopes", "at least one scope"),
        ({"budget": "5/week"}, "budget", "Invalid budget '5/week'"),
        ({"budget": "0/day"}, "budget", "Invalid budget"),
        ({"budget": "-1/day"}, "budget", "Invalid budget"),
        ({"budget": "five/day"}, "budget", "Invalid budget"),
        ({"rpm": 0}, "rpm", "Invalid rpm 0"),
        ({"tpm": -5}, "tpm", "Invalid tpm -5"),
        ({"name": "shop bot"}, "name", "Invalid name 'shop bot'"),
        ({"name": ""}, "name", "Invalid name"),
        ({"name": "x" * 101}, "name", "Invalid name"),
        ({"app": "my app"}, "app", "Invalid app 'my app'"),
        ({"name": "taken"}, "name", "already exists"),
    ],
)
def test_bad_input_names_the_field_and_writes_nothing(keys, sessions, fields, param, says):
    keys.create("taken")
    with pytest.raises(FmstackError) as caught:
        keys.create(**({"name": "new"} | fields))
    assert caught.value.param == param and says in caught.value.message
    assert 400 <= caught.value.status < 500
    with sessions() as s:
        assert s.scalars(select(ApiKey.name)).all() == ["taken"]


def test_scopes_may_be_comma_separated_and_are_kept_in_order(keys):
    assert keys.create("k", scopes=["admin,inference", "feedback"]).key.scopes == ("inference", "feedback", "admin")


@pytest.mark.parametrize(
    "text, start, end",
    [
        ("5/day", datetime(2026, 3, 14, tzinfo=UTC), datetime(2026, 3, 15, tzinfo=UTC)),
        ("$100/month", datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)),
    ],
)
def test_budgets_are_calendar_periods_in_utc(text, start, end):
    assert Budget.parse(text).window(NOW) == (start, end)
    december = datetime(2026, 12, 31, 23, 0, tzinfo=UTC)
    assert Budget.parse("1/month").window(december)[1] == datetime(2027, 1, 1, tzinfo=UTC)


def test_requests_per_minute_are_counted_and_refused_with_retry_after(keys):
    key = keys.authenticate(keys.create("bot", rpm=2).secret)
    clock = Clock()
    limiter = Limiter(keys, clock)
    limiter.admit(key)
    clock.now += 10
    limiter.admit(key)
    clock.now += 5
    with pytest.raises(RateLimited) as caught:
        limiter.admit(key)
    assert caught.value.status == 429 and caught.value.code == "rate_limit_exceeded"
    assert caught.value.retry_after == 45 and caught.value.headers() == {"Retry-After": "45"}
    clock.now += 45  # the first request has left the window
    limiter.admit(key)


def test_a_new_process_counts_the_last_minutes_requests_from_the_traces(keys, sessions):
    key = keys.authenticate(keys.create("bot", rpm=2).secret)
    add_traces(sessions, "bot", (50, 10, 0.0), (20, 10, 0.0), (90, 10, 0.0))  # the last one is too old to count
    add_traces(sessions, "other-key", *[(5, 10, 0.0)] * 3)
    with pytest.raises(RateLimited) as caught:
        Limiter(keys, Clock()).admit(key)
    assert caught.value.retry_after == 10
    Limiter(keys, Clock(NOW + timedelta(seconds=11))).admit(key)


def test_tokens_per_minute_come_from_the_traces(keys, sessions):
    key = keys.authenticate(keys.create("bot", tpm=100).secret)
    add_traces(sessions, "bot", (40, 30, 0.0), (30, 50, 0.0))
    limiter = Limiter(keys, Clock())
    limiter.admit(key)  # 80 of 100: the next request may still go
    add_traces(sessions, "bot", (5, 40, 0.0))
    with pytest.raises(RateLimited, match="used 120 tokens") as caught:
        limiter.admit(key)
    assert caught.value.retry_after == 20  # when the 30 of 40 s ago leave, 90 remain: under the limit


def test_over_budget_is_insufficient_quota_until_the_period_renews(keys, sessions):
    key = keys.authenticate(keys.create("bot", budget="0.01/day").secret)
    add_traces(sessions, "bot", (3600, 5, 0.004), (16 * 3600, 5, 1.0))  # the dollar was spent yesterday
    limiter = Limiter(keys, Clock())
    limiter.admit(key)
    add_traces(sessions, "bot", (60, 5, 0.007))
    with pytest.raises(InsufficientQuota) as caught:
        limiter.admit(key)
    error = caught.value
    assert error.status == 429 and error.to_body()["error"]["type"] == error.to_body()["error"]["code"]
    assert error.code == "insufficient_quota" and "$0.011000 of its $0.01 per day budget" in error.message
    assert error.retry_after == math.ceil((datetime(2026, 3, 15, tzinfo=UTC) - NOW).total_seconds())


def test_a_key_without_limits_never_reads_the_store(keys):
    key = keys.authenticate(keys.create("free").secret)
    limiter = Limiter(KeyStore(None), Clock())  # no store at all
    for _ in range(100):
        limiter.admit(key)


def test_0007_adds_the_keys_table_and_downgrades_cleanly(home):
    engine = engine_for(get_settings())
    alembic(engine, "upgrade", "0006")
    alembic(engine, "upgrade", "0007")
    assert "api_keys" in inspect(engine).get_table_names()
    assert "ix_traces_key_name_created_at" in {i["name"] for i in inspect(engine).get_indexes("traces")}
    alembic(engine, "downgrade", "0006")
    assert "api_keys" not in inspect(engine).get_table_names()
    assert "ix_traces_key_name_created_at" not in {i["name"] for i in inspect(engine).get_indexes("traces")}
