"""A prompt's content: Jinja2 templates for the system and user messages, few-shot examples, model parameters.

Templates render in a sandbox with strict undefined variables: a variable that is not given is an error naming
it, so nothing reaches a model with a hole in it. The variables a prompt takes are read from its templates.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from typing import Any

import jinja2
import yaml
from jinja2 import meta
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fmstack.app.prompts.refs import PromptError

_JINJA = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)


class MissingVariable(PromptError):
    """A variable the prompt uses was not given."""

    def __init__(self, label: str, missing: list[str], uses: list[str]):
        names = ", ".join(f"'{m}'" for m in missing)
        plural = "s" if len(missing) > 1 else ""
        super().__init__(
            f"Missing variable{plural} {names} for prompt '{label}' (it uses: {', '.join(uses)}). "
            "Nothing was sent to the model.",
            param=f"variables.{missing[0]}",
            code="missing_variable",
        )
        self.missing = missing


class Example(BaseModel):
    """A few-shot example: a user turn and the assistant's answer, both templates."""

    model_config = ConfigDict(extra="forbid")
    user: str
    assistant: str


class PromptParams(BaseModel):
    """Model parameters stored with a version; a request may override each of them."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    response_format: dict[str, Any] | None = None


class PromptContent(BaseModel):
    """What a version holds. Two contents with the same `content_hash` are the same prompt."""

    model_config = ConfigDict(extra="forbid")
    system: str | None = None
    user: str | None = None
    examples: list[Example] = Field(default_factory=list)
    params: PromptParams = Field(default_factory=PromptParams)

    @field_validator("system", "user")
    @classmethod
    def _empty_is_none(cls, v: str | None) -> str | None:
        return v if v and v.strip() else None

    @classmethod
    def build(cls, data: dict[str, Any], where: str = "prompt") -> PromptContent:
        """Validated content, or a `PromptError` naming the field (and the template line) to fix."""
        try:
            content = cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "content"
            if first["type"] == "extra_forbidden":
                known = {"params": ", ".join(PromptParams.model_fields)}.get(str(first["loc"][0]), "")
                hint = f" Known: {known}." if known else " Known: system, user, examples, params."
                raise PromptError(f"{where}: unknown field '{field}'.{hint}", param=field) from None
            raise PromptError(f"{where}: {field}: {first['msg']}.", param=field) from None
        if content.system is None and content.user is None:
            raise PromptError(f"{where}: give a 'system' or a 'user' template (or both).", param="user")
        for part, source in content.templates():
            try:
                _parse(source)
            except jinja2.TemplateSyntaxError as exc:
                problem = (exc.message or "syntax error").rstrip(".")
                raise PromptError(
                    f"{where}: {part}: template error on line {exc.lineno}: {problem}.", param=part
                ) from None
        return content

    def templates(self) -> list[tuple[str, str]]:
        """(part, template) for every part, in the order the messages come."""
        parts = [("system", self.system)] if self.system is not None else []
        for i, ex in enumerate(self.examples):
            parts += [(f"examples[{i}].user", ex.user), (f"examples[{i}].assistant", ex.assistant)]
        return parts + ([("user", self.user)] if self.user is not None else [])

    @property
    def variables(self) -> list[str]:
        """Every variable the templates use, sorted."""
        found: set[str] = set()
        for _, source in self.templates():
            found |= meta.find_undeclared_variables(_parse(source))
        return sorted(found)

    def canonical(self) -> dict[str, Any]:
        """The content as plain data, without unset parameters: what is hashed, stored, shown and diffed."""
        return {
            "system": self.system,
            "user": self.user,
            "examples": [ex.model_dump() for ex in self.examples],
            "params": self.params.model_dump(exclude_none=True),
        }

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.canonical(), sort_keys=True).encode()).hexdigest()

    def render(self, variables: dict[str, Any] | None, label: str = "prompt") -> list[dict[str, str]]:
        """The chat messages: system, then each example's user and assistant turns, then the user message."""
        variables = dict(variables or {})
        uses = self.variables
        missing = [v for v in uses if v not in variables]
        roles = {"system": "system", "user": "user"}
        messages = []
        try:
            for part, source in self.templates():
                role = roles.get(part) or part.rsplit(".", 1)[1]
                messages.append({"role": role, "content": _compile(source).render(**variables)})
        except jinja2.UndefinedError as exc:
            if missing:
                raise MissingVariable(label, missing, uses) from None
            raise PromptError(f"Prompt '{label}': {exc.message}.", param="variables", code="undefined") from None
        except jinja2.TemplateError as exc:
            raise PromptError(f"Prompt '{label}' failed to render: {exc}.", param="variables") from None
        return messages

    def as_text(self) -> str:
        """A readable, stable text form (for `show` and unified diffs): each part under a header, then params."""
        lines: list[str] = []
        for part, source in self.templates():
            lines += [f"## {part}", *source.splitlines(), ""]
        params = self.params.model_dump(exclude_none=True)
        lines.append("## params")
        lines += yaml.safe_dump(params, sort_keys=True, allow_unicode=True).splitlines() if params else ["(none)"]
        return "\n".join(lines) + "\n"


@lru_cache(maxsize=512)
def _parse(source: str):
    return _JINJA.parse(source)


@lru_cache(maxsize=512)
def _compile(source: str) -> jinja2.Template:
    return _JINJA.from_string(source)
