"""Names, aliases and references: `name` (the latest version), `name@3` or `name@v3` (a version), `name@production`
(whatever version the alias points at now)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from fmstack.core.errors import FmstackError

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
ALIAS = re.compile(r"[a-z0-9_-]{1,64}")
VERSION = re.compile(r"v?([0-9]+)")
LATEST = "latest"


class PromptError(FmstackError):
    """A prompt, reference or alias the user must fix (HTTP 400, CLI exit 2)."""


@dataclass(frozen=True)
class PromptRef:
    name: str
    version: int | None = None  # a fixed version
    alias: str | None = None  # or an alias; neither: the latest version

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}@{self.version}"
        return f"{self.name}@{self.alias}" if self.alias else self.name


def check_name(name: str) -> str:
    if not NAME.fullmatch(name or ""):
        raise PromptError(
            f"'{name}' is not a valid prompt name: use letters, digits, '_', '.' and '-' (at most 100 characters, "
            "starting with a letter or digit).",
            param="name",
        )
    return name


def check_alias(alias: str) -> str:
    if not ALIAS.fullmatch(alias or "") or VERSION.fullmatch(alias) or alias == LATEST:
        raise PromptError(
            f"'{alias}' is not a valid alias: use lowercase letters, digits, '_' and '-' (e.g. production, staging); "
            f"numbers, v1-style names and '{LATEST}' mean versions.",
            param="alias",
        )
    return alias


def parse_ref(ref: str | PromptRef) -> PromptRef:
    """`name`, `name@latest`, `name@3`, `name@v3` or `name@alias`."""
    if isinstance(ref, PromptRef):
        return ref
    name, at, target = (ref or "").strip().partition("@")
    check_name(name)
    if not at or target == LATEST:
        return PromptRef(name)
    if m := VERSION.fullmatch(target):
        version = int(m.group(1))
        if version < 1:
            raise PromptError(f"'{ref}': versions start at 1.", param="ref")
        return PromptRef(name, version=version)
    if not ALIAS.fullmatch(target):
        raise PromptError(
            f"'{ref}' is not a prompt reference; write NAME, NAME@VERSION (e.g. {name}@2) or NAME@ALIAS "
            f"(e.g. {name}@production).",
            param="ref",
        )
    return PromptRef(name, alias=target)
