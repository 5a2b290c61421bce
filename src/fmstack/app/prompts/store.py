"""Prompts in the store: immutable numbered versions, movable aliases with their history, references resolved.

Every save of changed content is a new version (1, 2, 3… per name); saving the latest version's content again
stores nothing. An alias points at one version and moves; each move is recorded, and a rollback is a move back.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from fmstack.app.prompts.refs import PromptError, PromptRef, check_alias, check_name, parse_ref
from fmstack.app.prompts.template import PromptContent
from fmstack.core.config import Settings, get_settings
from fmstack.core.errors import NotFound
from fmstack.core.store.schema import PromptAlias, PromptAliasMove, PromptVersion, utcnow


class PromptNotFound(NotFound):
    pass


@dataclass
class StoredPrompt:
    """One version of a prompt, as read from the store."""

    name: str
    version: int
    created_at: datetime
    content: PromptContent
    content_hash: str
    note: str | None = None
    aliases: list[str] = field(default_factory=list)  # the aliases pointing at this version now

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def variables(self) -> list[str]:
        return self.content.variables

    @property
    def params(self) -> dict[str, Any]:
        return self.content.params.model_dump(exclude_none=True)

    def render(self, variables: dict[str, Any] | None = None) -> list[dict[str, str]]:
        return self.content.render(variables, self.label)

    def to_dict(self) -> dict[str, Any]:
        return {
            "object": "prompt.version",
            "name": self.name,
            "version": self.version,
            "ref": self.label,
            "created_at": self.created_at.isoformat(),
            "content_hash": self.content_hash,
            "note": self.note,
            "aliases": self.aliases,
            "variables": self.variables,
            **self.content.canonical(),
        }


@dataclass
class Saved:
    prompt: StoredPrompt
    created: bool  # False: the content equals the latest version's, so no new version was stored


@dataclass
class AliasMove:
    name: str
    alias: str
    from_version: int | None  # None: the alias is new
    to_version: int
    moved_at: datetime

    @property
    def moved(self) -> bool:
        return self.from_version != self.to_version

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "alias": self.alias,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "moved_at": self.moved_at.isoformat(),
        }


@dataclass
class PromptSummary:
    name: str
    latest: int
    versions: int
    aliases: dict[str, int]
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "object": "prompt",
            "name": self.name,
            "latest_version": self.latest,
            "versions": self.versions,
            "aliases": self.aliases,
            "updated_at": self.updated_at.isoformat(),
        }


class PromptStore:
    """Prompt versions and aliases over a session factory (`PromptStore.open()` uses the configured store)."""

    def __init__(self, sessions: sessionmaker):
        self.sessions = sessions

    @classmethod
    def open(cls, settings: Settings | None = None) -> PromptStore:
        from fmstack.core.store import open_store

        return cls(open_store(settings or get_settings()))

    # --- writing ----------------------------------------------------------------------------------------------

    def save(self, name: str, content: PromptContent | dict[str, Any], note: str | None = None) -> Saved:
        """Store `content` as the next version of `name`, unless it equals the latest version's content."""
        check_name(name)
        if not isinstance(content, PromptContent):
            content = PromptContent.build(content, name)
        digest = content.content_hash
        for _ in range(5):  # two writers may pick the same next number: the unique constraint makes one retry
            try:
                with self.sessions.begin() as s:
                    latest = self._latest(s, name)
                    if latest is not None and latest.content_hash == digest:
                        return Saved(self._stored(s, latest), created=False)
                    row = PromptVersion(
                        name=name,
                        version=(latest.version if latest else 0) + 1,
                        created_at=utcnow(),
                        content_hash=digest,
                        note=note or None,
                        variables=content.variables,
                        **content.canonical(),
                    )
                    s.add(row)
                    s.flush()
                    return Saved(self._stored(s, row), created=True)
            except IntegrityError:
                continue
        raise PromptError(f"Could not save '{name}': other writers kept taking the next version number; retry.")

    def set_alias(self, name: str, alias: str, target: int | str) -> AliasMove:
        """Point `alias` at a version (a number, `v3`, `latest` or another alias); the move is recorded."""
        check_alias(alias)
        with self.sessions.begin() as s:
            version = self._resolve(s, self._target_ref(name, target)).version
            row = s.get(PromptAlias, (name, alias))
            if row is not None and row.version == version:
                return AliasMove(name, alias, version, version, _utc(row.updated_at))
            move = self.move_alias(s, name, alias, version)
            return AliasMove(name, alias, move.from_version, version, _utc(move.created_at))

    def move_alias(self, s: Session, name: str, alias: str, version: int | None) -> PromptAliasMove | None:
        """Point `alias` at `version` in the caller's transaction (an A/B promotion moves it with the route), the
        move recorded; None: it already points there. `version` None removes the alias (undoing its creation)."""
        row = s.get(PromptAlias, (name, alias))
        before = row.version if row is not None else None
        if before == version:
            return None
        now = utcnow()
        if version is None:
            s.delete(row)
            return None
        if row is None:
            s.add(PromptAlias(name=name, alias=alias, version=version, updated_at=now))
        else:
            row.version, row.updated_at = version, now
        move = PromptAliasMove(name=name, alias=alias, from_version=before, to_version=version, created_at=now)
        s.add(move)
        s.flush()
        return move

    def version_of(self, s: Session, ref: str | PromptRef) -> int:
        """The version a reference names now, read in the caller's transaction."""
        return self._resolve(s, parse_ref(ref) if isinstance(ref, str) else ref).version

    # --- reading ----------------------------------------------------------------------------------------------

    def get(self, ref: str | PromptRef) -> StoredPrompt:
        """The version a reference names: `name` (latest), `name@3`, `name@production`."""
        with self.sessions() as s:
            return self._stored(s, self._resolve(s, parse_ref(ref)))

    def versions(self, name: str) -> list[StoredPrompt]:
        with self.sessions() as s:
            rows = s.scalars(select(PromptVersion).where(PromptVersion.name == name).order_by(PromptVersion.version))
            out = [self._stored(s, r) for r in rows]
        if not out:
            raise self._unknown(name)
        return out

    def aliases(self, name: str) -> dict[str, int]:
        with self.sessions() as s:
            return self._aliases(s, name)

    def moves(self, name: str) -> list[AliasMove]:
        """Every alias move of a prompt, oldest first."""
        with self.sessions() as s:
            rows = s.scalars(select(PromptAliasMove).where(PromptAliasMove.name == name).order_by(PromptAliasMove.id))
            return [AliasMove(r.name, r.alias, r.from_version, r.to_version, _utc(r.created_at)) for r in rows]

    def list(self) -> list[PromptSummary]:
        with self.sessions() as s:
            query = (
                select(
                    PromptVersion.name,
                    func.max(PromptVersion.version),
                    func.count(PromptVersion.id),
                    func.max(PromptVersion.created_at),
                )
                .group_by(PromptVersion.name)
                .order_by(PromptVersion.name)
            )
            aliases: dict[str, dict[str, int]] = {}
            for a in s.scalars(select(PromptAlias).order_by(PromptAlias.alias)):
                aliases.setdefault(a.name, {})[a.alias] = a.version
            return [
                PromptSummary(name, latest, n, aliases.get(name, {}), _utc(updated))
                for name, latest, n, updated in s.execute(query)
            ]

    def exists(self, name: str) -> bool:
        with self.sessions() as s:
            return self._latest(s, name) is not None

    def trace_filter(self, text: str | None) -> tuple[str | None, int | None]:
        """(name, version) to filter traces by, as `list_traces(prompt_name=, prompt_version=)` take them: `name`
        keeps every version of it; `name@3`, `name@v3`, `name@latest` and `name@production` keep the one version
        they name now; None keeps every trace."""
        if text is None:
            return None, None
        ref = parse_ref(text)
        if "@" not in text:
            return ref.name, None
        return ref.name, self.get(ref).version

    def diff(self, a: str | PromptRef, b: str | PromptRef, context: int = 3) -> str:
        """A unified diff of two versions' parts and parameters ('' when they are the same)."""
        pa, pb = self.get(a), self.get(b)
        return diff_prompts(pa, pb, context)

    # --- internals --------------------------------------------------------------------------------------------

    @staticmethod
    def _target_ref(name: str, target: int | str) -> PromptRef:
        if isinstance(target, int):
            return PromptRef(check_name(name), version=target)
        return parse_ref(f"{name}@{str(target).lstrip('@')}")

    @staticmethod
    def _latest(s: Session, name: str) -> PromptVersion | None:
        return s.scalars(
            select(PromptVersion).where(PromptVersion.name == name).order_by(PromptVersion.version.desc()).limit(1)
        ).first()

    @staticmethod
    def _aliases(s: Session, name: str) -> dict[str, int]:
        rows = s.scalars(select(PromptAlias).where(PromptAlias.name == name).order_by(PromptAlias.alias))
        return {r.alias: r.version for r in rows}

    def _unknown(self, name: str) -> PromptNotFound:
        with self.sessions() as s:
            known = list(s.scalars(select(PromptVersion.name).distinct().order_by(PromptVersion.name).limit(20)))
        hint = f" Known prompts: {', '.join(known)}." if known else " No prompt is stored yet."
        return PromptNotFound(f"No prompt named '{name}'.{hint} Create one with `fmstack prompt create`.", param="ref")

    def _resolve(self, s: Session, ref: PromptRef) -> PromptVersion:
        latest = self._latest(s, ref.name)
        if latest is None:
            raise self._unknown(ref.name)
        if ref.alias is not None:
            alias = s.get(PromptAlias, (ref.name, ref.alias))
            if alias is None:
                known = ", ".join(self._aliases(s, ref.name)) or "none yet"
                raise PromptNotFound(
                    f"Prompt '{ref.name}' has no alias '{ref.alias}' (its aliases: {known}). Set one with "
                    f"`fmstack prompt alias {ref.name} {ref.alias} VERSION`.",
                    param="ref",
                )
            version = alias.version
        else:
            version = ref.version if ref.version is not None else latest.version
        row = s.scalars(
            select(PromptVersion).where(PromptVersion.name == ref.name, PromptVersion.version == version)
        ).first()
        if row is None:
            raise PromptNotFound(
                f"Prompt '{ref.name}' has no version {version}; its versions are 1 to {latest.version}.", param="ref"
            )
        return row

    def _stored(self, s: Session, row: PromptVersion) -> StoredPrompt:
        content = PromptContent.model_validate(
            {"system": row.system, "user": row.user, "examples": row.examples or [], "params": row.params or {}}
        )
        aliases = [a for a, v in self._aliases(s, row.name).items() if v == row.version]
        return StoredPrompt(row.name, row.version, _utc(row.created_at), content, row.content_hash, row.note, aliases)


def diff_prompts(a: StoredPrompt, b: StoredPrompt, context: int = 3) -> str:
    lines = difflib.unified_diff(
        a.content.as_text().splitlines(keepends=True),
        b.content.as_text().splitlines(keepends=True),
        fromfile=a.label,
        tofile=b.label,
        n=context,
    )
    return "".join(lines)


def _utc(moment: datetime) -> datetime:
    """SQLite gives back naive datetimes; they were stored in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
