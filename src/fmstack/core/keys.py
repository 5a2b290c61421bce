"""API keys: who may call the server, for what (scopes), how fast (rpm, tpm) and for how much (a USD budget).

A key is `fmk_` and 43 URL-safe characters (256 random bits). The store keeps its sha256 and its first characters
(to tell keys apart in a listing), never the key: it is shown once, by `create` and `rotate`, and a copy of the
database gives no key away. 256 random bits need no slow hash: nothing can be guessed back from the digest.

Token use and spend are read from the key's traces — the cost accounting every call already has — so nothing
extra is written per request and the limits hold across restarts. They are checked before a request, against the
calls that have finished: the call that crosses a limit completes, the next one is refused. Requests per minute
are also counted in memory as they are admitted, because a burst arrives before its traces are written; that
count starts from the key's traces of the last minute.

```python
from fmstack.core.config import get_settings
from fmstack.core.keys import KeyStore
from fmstack.core.store import open_store

keys = KeyStore(open_store(get_settings()))
new = keys.create("shop-bot", scopes=["inference"], rpm=60, budget="5/day")
print(new.secret)  # the only time it is shown
print(keys.authenticate(new.secret).app)  # shop-bot
```
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from fmstack.core.errors import FmstackError, InvalidRequest, NotFound
from fmstack.core.store.schema import ApiKey, Trace, utcnow

SCOPES = ("inference", "feedback", "admin")
WINDOW = 60.0  # seconds over which rpm and tpm count
_SECRET = re.compile(r"fmk_[A-Za-z0-9_-]{43}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_BUDGET = re.compile(r"\$?(\d+(?:\.\d+)?)/(day|month)")


class InvalidApiKey(FmstackError):
    status = 401

    def __init__(self, message: str):
        super().__init__(message, code="invalid_api_key")

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}  # RFC 6750: how to authenticate


class MissingScope(FmstackError):
    status = 403
    type = "permission_error"

    def __init__(self, message: str):
        super().__init__(message, code="missing_scope")


class RateLimited(FmstackError):
    """Over rpm or tpm: `retry_after` is when enough of the last minute has passed."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, retry_after: float):
        super().__init__(message, code=self.code)
        self.retry_after = max(1, math.ceil(retry_after))


class InsufficientQuota(RateLimited):
    """Over budget, as OpenAI says it; `retry_after` is when the budget's period renews."""

    type = "insufficient_quota"
    code = "insufficient_quota"


class KeyExists(FmstackError):
    status = 409


@dataclass(frozen=True)
class Budget:
    """A spending cap in USD per calendar day or month, in UTC, at the registry's prices."""

    usd: float
    period: str  # day | month

    @classmethod
    def parse(cls, text: str) -> Budget:
        match = _BUDGET.fullmatch(text.strip().replace(" ", ""))
        if not match or float(match[1]) <= 0:
            raise InvalidRequest(
                f"Invalid budget {text!r}: write USD per day or per month, e.g. 5/day or 100/month.", param="budget"
            )
        return cls(float(match[1]), match[2])

    def window(self, now: datetime) -> tuple[datetime, datetime]:
        """The current period: [start, end) in UTC."""
        day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        if self.period == "day":
            return day, day + timedelta(days=1)
        month = day.replace(day=1)
        return month, (month + timedelta(days=32)).replace(day=1)

    def __str__(self) -> str:
        return f"{self.usd:g}/{self.period}"


@dataclass(frozen=True)
class Key:
    """A key as everything but the store sees it: neither the secret nor its hash."""

    name: str
    app: str
    scopes: tuple[str, ...]
    prefix: str  # the secret's first characters, to recognise it
    rpm: int | None
    tpm: int | None
    budget: Budget | None
    created_at: datetime
    rotated_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, row: ApiKey) -> Key:
        budget = Budget(row.budget_usd, row.budget_period) if row.budget_usd is not None else None
        times = (_utc(row.created_at), _utc(row.rotated_at), _utc(row.revoked_at))
        return cls(row.name, row.app, tuple(row.scopes), row.prefix, row.rpm, row.tpm, budget, *times)

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def allows(self, scope: str) -> bool:
        """`admin` may do everything the other scopes may."""
        return scope in self.scopes or "admin" in self.scopes

    def to_dict(self) -> dict:
        def iso(moment: datetime | None) -> str | None:
            return moment.isoformat() if moment else None

        return {
            "object": "api_key",
            "name": self.name,
            "app": self.app,
            "scopes": list(self.scopes),
            "prefix": self.prefix,
            "rpm": self.rpm,
            "tpm": self.tpm,
            "budget": str(self.budget) if self.budget else None,
            "status": "active" if self.active else "revoked",
            "created_at": iso(self.created_at),
            "rotated_at": iso(self.rotated_at),
            "revoked_at": iso(self.revoked_at),
        }


@dataclass(frozen=True)
class NewKey:
    """A key just made or rotated, with its secret: the one result that carries it."""

    key: Key
    secret: str

    def to_dict(self) -> dict:
        return self.key.to_dict() | {"secret": self.secret}


@dataclass(frozen=True)
class Usage:
    """What a key's traces say it used: its calls of the last minute (epoch seconds, tokens) and its spend in the
    budget's current period."""

    calls: list[tuple[float, int]]
    spent: float


class KeyStore:
    """Keys in the store: create, list, revoke, rotate; authenticate a secret; read a key's usage from its traces.
    Each change is one transaction: a key is written whole or not at all."""

    def __init__(self, sessions: sessionmaker):
        self.sessions = sessions

    def create(
        self,
        name: str,
        app: str | None = None,
        scopes: Iterable[str] = ("inference",),
        rpm: int | None = None,
        tpm: int | None = None,
        budget: str | None = None,
    ) -> NewKey:
        """A new key; `app` (default: the name) is what its calls are traced under, whatever the client sends."""
        parsed = Budget.parse(budget) if budget is not None else None
        row = ApiKey(
            name=_checked_name(name, "name"),
            app=_checked_name(app or name, "app"),
            scopes=list(_scopes(scopes)),
            rpm=_limit(rpm, "rpm"),
            tpm=_limit(tpm, "tpm"),
            budget_usd=parsed.usd if parsed else None,
            budget_period=parsed.period if parsed else None,
            created_at=utcnow(),
        )
        secret = _new_secret(row)
        exists = KeyExists(
            f"A key named '{row.name}' already exists (revoked keys keep their name): choose another name.",
            param="name",
            code="key_exists",
        )
        try:
            with self.sessions.begin() as session:
                if session.scalar(select(ApiKey.id).where(ApiKey.name == row.name)) is not None:
                    raise exists
                session.add(row)
        except IntegrityError:  # created meanwhile by another process
            raise exists from None
        return NewKey(Key.of(row), secret)

    def list(self) -> list[Key]:
        with self.sessions() as session:
            return [Key.of(row) for row in session.scalars(select(ApiKey).order_by(ApiKey.id))]

    def revoke(self, name: str) -> Key:
        """The key stops working at once; it stays listed, and its name stays taken (traces name it)."""
        with self.sessions.begin() as session:
            row = _row(session, name)
            row.revoked_at = row.revoked_at or utcnow()
            return Key.of(row)

    def rotate(self, name: str) -> NewKey:
        """A new secret for the same key (name, app, scopes, limits, spend); the old secret stops working at once."""
        with self.sessions.begin() as session:
            row = _row(session, name)
            if row.revoked_at is not None:
                raise InvalidRequest(f"The key '{name}' is revoked: create a new key instead.", param="name")
            secret = _new_secret(row)
            row.rotated_at = utcnow()
            return NewKey(Key.of(row), secret)

    def exists(self) -> bool:
        """Whether any key was ever made (revoked ones count: revoking every key must not open the server)."""
        with self.sessions() as session:
            return session.scalar(select(ApiKey.id).limit(1)) is not None

    def authenticate(self, secret: str) -> Key:
        """The active key with this secret, or a 401 that says what is wrong without repeating the secret."""
        if not _SECRET.fullmatch(secret):
            raise InvalidApiKey(
                "The API key is not in fmstack's format (fmk_ and 43 letters, digits, - or _): send the key "
                "`fmstack keys create` printed, as `Authorization: Bearer KEY`."
            )
        with self.sessions() as session:
            row = session.scalar(select(ApiKey).where(ApiKey.secret_hash == _digest(secret)))
        if row is None:
            raise InvalidApiKey(
                f"Incorrect API key {secret[:12]}…: no key has it (the old secret of a rotated key stops working)."
            )
        if row.revoked_at is not None:
            raise InvalidApiKey(f"The API key '{row.name}' was revoked on {_utc(row.revoked_at):%Y-%m-%d %H:%M} UTC.")
        return Key.of(row)

    def usage(self, key: Key, now: float) -> Usage:
        """The key's calls in the minute before `now`, and its spend in the budget's current period."""
        minute_ago = datetime.fromtimestamp(now - WINDOW, UTC)
        tokens = Trace.prompt_tokens + Trace.completion_tokens
        mine = Trace.key_name == key.name
        with self.sessions() as session:
            calls = session.execute(select(Trace.created_at, tokens).where(mine, Trace.created_at >= minute_ago))
            calls = [(_utc(at).timestamp(), count or 0) for at, count in calls]
            spent = 0.0
            if key.budget:
                start = key.budget.window(datetime.fromtimestamp(now, UTC))[0]
                spent = session.scalar(select(func.sum(Trace.cost)).where(mine, Trace.created_at >= start)) or 0.0
        return Usage(calls, spent)


class Limiter:
    """Admits a key's request or refuses it with a 429 that says when to retry: over budget first (it lasts
    longest), then tokens per minute, then requests per minute. One per server process."""

    def __init__(self, keys: KeyStore, clock: Callable[[], float] = time.time):
        self.keys = keys
        self.clock = clock
        self._admitted: dict[str, deque[float]] = {}  # by key name: when its requests of the last minute came
        self._lock = threading.Lock()

    def admit(self, key: Key) -> None:
        if not (key.rpm or key.tpm or key.budget):
            return
        now = self.clock()
        needs_store = key.tpm or key.budget or key.name not in self._admitted
        usage = self.keys.usage(key, now) if needs_store else Usage([], 0.0)
        if key.budget:
            _check_budget(key, key.budget, usage.spent, now)
        if key.tpm:
            _check_tokens(key, key.tpm, usage.calls, now)
        if key.rpm:
            self._count(key, key.rpm, usage.calls, now)

    def _count(self, key: Key, rpm: int, calls: list[tuple[float, int]], now: float) -> None:
        """Count the request, or refuse it; the first count of a key in this process starts from its traces."""
        with self._lock:
            window = self._admitted.setdefault(key.name, deque(sorted(at for at, _ in calls)))
            while window and window[0] <= now - WINDOW:
                window.popleft()
            if len(window) >= rpm:
                wait = window[0] + WINDOW - now
                raise RateLimited(
                    f"The key '{key.name}' made {len(window)} requests in the last minute, its limit is {rpm} per "
                    f"minute: retry after {math.ceil(wait)} s.",
                    wait,
                )
            window.append(now)


def _check_budget(key: Key, budget: Budget, spent: float, now: float) -> None:
    if spent < budget.usd:
        return
    end = budget.window(datetime.fromtimestamp(now, UTC))[1]
    raise InsufficientQuota(
        f"The key '{key.name}' has spent ${spent:.6f} of its ${budget.usd:g} per {budget.period} budget; it renews "
        f"at {end:%Y-%m-%d %H:%M} UTC.",
        end.timestamp() - now,
    )


def _check_tokens(key: Key, tpm: int, calls: list[tuple[float, int]], now: float) -> None:
    used = total = sum(tokens for _, tokens in calls)
    if used < tpm:
        return
    wait = WINDOW
    for at, tokens in sorted(calls):  # the oldest calls leave the window first
        used -= tokens
        if used < tpm:
            wait = at + WINDOW - now
            break
    raise RateLimited(
        f"The key '{key.name}' used {total} tokens in the last minute, its limit is {tpm} per minute: retry after "
        f"{math.ceil(wait)} s.",
        wait,
    )


def _row(session: Session, name: str) -> ApiKey:
    row = session.scalar(select(ApiKey).where(ApiKey.name == name))
    if row is None:
        raise NotFound(f"No key named '{name}'. `fmstack keys list` shows them.", param="name")
    return row


def _new_secret(row: ApiKey) -> str:
    """A fresh secret for `row`, which keeps only its hash and prefix."""
    secret = "fmk_" + secrets.token_urlsafe(32)
    row.secret_hash, row.prefix = _digest(secret), secret[:12]
    return secret


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _checked_name(value: str, field: str) -> str:
    if not _NAME.fullmatch(value):
        raise InvalidRequest(
            f"Invalid {field} {value!r}: use letters, digits, '.', '_' or '-' (up to 100, starting with a letter or "
            "digit).",
            param=field,
        )
    return value


def _scopes(values: Iterable[str]) -> tuple[str, ...]:
    """Scopes from a list whose items may be comma-separated (`--scope inference,feedback`), in canonical order."""
    asked = {s.strip() for value in values for s in value.split(",") if s.strip()}
    if unknown := sorted(asked - set(SCOPES)):
        raise InvalidRequest(f"Unknown scope '{unknown[0]}': choose from {', '.join(SCOPES)}.", param="scopes")
    if not asked:
        raise InvalidRequest(f"A key needs at least one scope: {', '.join(SCOPES)}.", param="scopes")
    return tuple(s for s in SCOPES if s in asked)


def _limit(value: int | None, field: str) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise InvalidRequest(f"Invalid {field} {value!r}: a whole number of at least 1, or none.", param=field)
    return value


def _utc(moment: datetime | None) -> datetime | None:
    """SQLite gives back naive datetimes; they were stored in UTC."""
    return moment.replace(tzinfo=UTC) if moment and not moment.tzinfo else moment
