"""Times as the store keeps them: aware, in UTC."""

from __future__ import annotations

from datetime import UTC, datetime

from fmstack.core.errors import InvalidRequest


def utc(moment: datetime, param: str | None = None) -> datetime:
    """`moment` in UTC; a naive time is taken to be UTC already (SQLite gives stored times back naive). A time UTC
    cannot hold (the year 1 in a zone east of Greenwich) is the caller's mistake, named by `param`."""
    try:
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError:
        raise InvalidRequest(f"{param}: {moment.isoformat()} is out of range.", param=param) from None
