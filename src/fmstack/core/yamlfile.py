"""YAML files that users write (eval suites, data pipelines): errors name the file, the line and the field.

Parsed twice on purpose: `safe_load` gives the data that pydantic validates, `compose` gives the node tree that
knows each field's line, so a validation error can point at the line to fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from fmstack.core.errors import FmstackError

M = TypeVar("M", bound=BaseModel)


def read_yaml(path: Path, what: str, error: type[FmstackError]) -> tuple[Any, yaml.Node | None]:
    """The data and the node tree of a YAML file, or `error` saying where it is not valid YAML."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise error(f"{path}: cannot read the {what} ({exc.strerror}).") from exc
    try:
        return yaml.safe_load(text), yaml.compose(text)
    except yaml.YAMLError as exc:
        line = exc.problem_mark.line + 1 if getattr(exc, "problem_mark", None) else "?"
        raise error(f"{path}:{line}: not valid YAML: {getattr(exc, 'problem', exc)}.") from exc


def validate(model: type[M], data: Any, path: Path, root: yaml.Node | None, error: type[FmstackError]) -> M:
    """`model` validated from `data`, or `error` with the file, line and field of the first problem."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise located(path, root, exc, error) from None


def dotted(loc: tuple) -> str:
    """A field path as a user writes it: `cases[2].vars`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def line_of(root: yaml.Node | None, loc: tuple) -> int:
    """1-based line of the deepest YAML node on the path `loc` (the field's own line when it exists)."""
    node = root
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if k.value == str(part)), None)
            if child is None:
                child = next((k for k, _ in node.value if k.value == str(part)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = node.value[part]
        if child is None:
            break
        node = child
    return node.start_mark.line + 1 if node is not None else 1


def located(path: Path, root: yaml.Node | None, exc: ValidationError, error: type[FmstackError]) -> FmstackError:
    """The first validation error as `error`, worded for a person editing the file."""
    first = exc.errors()[0]
    loc = tuple(first["loc"])
    if first["type"] == "extra_forbidden":
        return error(f"{path}:{line_of(root, loc)}: {dotted(loc)}: unknown field; check its spelling.")
    if first["type"] == "missing":
        return error(f"{path}:{line_of(root, loc[:-1])}: {dotted(loc)}: required field is missing.")
    return error(f"{path}:{line_of(root, loc)}: {dotted(loc)}: {first['msg']}.")
