"""Loop runs in the store (`loop_runs`): where each run's data window starts, which step it reached and what each
finished step produced.

Every step is committed as it finishes, so a run killed at any point leaves a row that says where it stopped, and
`--resume` continues from the first unfinished step with the outputs of the finished ones. A row still marked
`running` whose process is gone (same host, pid dead) is reported as interrupted.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from fmstack.core.errors import FmstackError, NotFound
from fmstack.core.store.schema import LoopRun, utcnow

# A run's data window ends where the last completed run's ended: only a run that shipped a candidate consumed it.
COMPLETED = "done"
ENDED = ("done", "gate-failed", "stopped", "failed", "interrupted")


@dataclass
class RunInfo:
    """A loop run as the CLI shows it and `--json` prints it."""

    id: int
    app: str
    base: str
    status: str
    step: str
    started_at: datetime
    finished_at: datetime | None
    since: datetime | None
    until: datetime | None
    candidate: str | None
    workdir: str
    reason: str | None
    steps: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, row: LoopRun) -> RunInfo:
        status = "interrupted" if row.status == "running" and not _alive(row) else row.status
        times = (_utc(row.started_at), _utc(row.finished_at), _utc(row.since), _utc(row.until))
        return cls(row.id, row.app, row.base, status, row.step, *times, row.candidate, row.workdir, row.reason,
                   dict(row.steps or {}), dict(row.config or {}))  # fmt: skip


def _utc(value: datetime | None) -> datetime | None:
    """SQLite gives naive datetimes back; every time fmstack stores is UTC."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _alive(row: LoopRun) -> bool:
    """Whether the process that runs `row` still exists (only knowable on its own host; elsewhere assume so)."""
    if row.pid is None or row.host != socket.gethostname():
        return row.pid is not None
    try:
        os.kill(row.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


UNSAFE = re.compile(r"[^\w.-]")  # what an app name (a client's header) may hold that a file or model name may not


def safe_name(app: str) -> str:
    """The app's name as a file or model name: no path separators, so never a folder elsewhere."""
    return UNSAFE.sub("-", app).lstrip(".") or "app"


class LoopRuns:
    """The `loop_runs` table, one short transaction per change."""

    def __init__(self, sessions: sessionmaker):
        self.sessions = sessions

    def start(self, app: str, base: str, since: datetime | None, config: dict, workdir_root: str) -> RunInfo:
        """A new running row; its workdir is named after its id. The store holds one running row per app, so of two
        loops started at once one is refused here, whatever the checks before saw."""
        with _one_running(app), self.sessions.begin() as session:
            row = LoopRun(app=app, base=base, since=since, status="running", step="data", workdir="",
                          config=config, steps={}, pid=os.getpid(), host=socket.gethostname())  # fmt: skip
            session.add(row)
            session.flush()
            row.workdir = os.path.join(workdir_root, f"{safe_name(app)}-{row.id}")
            return RunInfo.of(row)

    def get(self, run_id: int) -> RunInfo:
        with self.sessions() as session:
            row = session.get(LoopRun, run_id)
            if row is None:
                raise NotFound(f"run: no loop run {run_id}; `fmstack loop list` shows them.", param="run")
            return RunInfo.of(row)

    def list(self, app: str | None = None, limit: int = 20) -> list[RunInfo]:
        query = select(LoopRun).order_by(LoopRun.id.desc()).limit(limit)
        if app:
            query = query.where(LoopRun.app == app)
        with self.sessions() as session:
            return [RunInfo.of(row) for row in session.scalars(query)]

    def last_completed(self, app: str) -> RunInfo | None:
        """The latest run of `app` that shipped a candidate: its `until` is where the next window starts."""
        query = select(LoopRun).where(LoopRun.app == app, LoopRun.status == COMPLETED).order_by(LoopRun.id.desc())
        with self.sessions() as session:
            row = session.scalars(query.limit(1)).first()
            return RunInfo.of(row) if row else None

    def unfinished(self, app: str) -> RunInfo | None:
        """The latest run of `app` if it did not end: running now, killed (its row still says running), interrupted
        or failed. Only the latest: once a newer run exists, an older broken one is history, not work to resume."""
        query = select(LoopRun).where(LoopRun.app == app).order_by(LoopRun.id.desc()).limit(1)
        with self.sessions() as session:
            row = session.scalars(query).first()
            info = RunInfo.of(row) if row else None
        return info if info and info.status in ("running", "interrupted", "failed") else None

    def claim(self, run_id: int) -> RunInfo:
        """Take over an interrupted or failed run to resume it in this process."""
        with self.sessions() as session:
            app = session.get(LoopRun, run_id).app
        with _one_running(app), self.sessions.begin() as session:
            row = session.get(LoopRun, run_id, with_for_update=True)
            if row.status == "running" and _alive(row):
                raise FmstackError(f"run: loop {run_id} of '{row.app}' is running (pid {row.pid}); wait for it.")
            row.status, row.pid, row.host, row.reason = "running", os.getpid(), socket.gethostname(), None
            row.finished_at, row.updated_at = None, utcnow()
            return RunInfo.of(row)

    def update(self, run_id: int, **values: Any) -> None:
        """Set columns of a run (the step reached, the window end, the candidate name)."""
        with self.sessions.begin() as session:
            row = session.get(LoopRun, run_id)
            for key, value in values.items():
                setattr(row, key, value)
            row.updated_at = utcnow()

    def step_done(self, run_id: int, step: str, output: dict[str, Any]) -> None:
        """Record a finished step's output: a resumed run skips it and reads this instead."""
        with self.sessions.begin() as session:
            row = session.get(LoopRun, run_id)
            row.steps = {**(row.steps or {}), step: output}  # a new dict: JSON columns track assignment only
            row.updated_at = utcnow()

    def finish(self, run_id: int, status: str, step: str, reason: str | None = None) -> RunInfo:
        with self.sessions.begin() as session:
            row = session.get(LoopRun, run_id)
            row.status, row.step, row.reason = status, step, reason
            row.finished_at = row.updated_at = utcnow()
            return RunInfo.of(row)


@contextmanager
def _one_running(app: str) -> Iterator[None]:
    """A second running row of `app` (the store's unique index, migration 0013) as the user's error."""
    try:
        yield
    except IntegrityError:
        raise FmstackError(
            f"another loop of '{app}' started at the same moment and is running; `fmstack loop list {app}` shows it."
        ) from None
