"""Command options derived from a config class: each field named in a help table becomes `--field-name` with the
field's type and default, so the flags cannot drift from the config they fill, and the command gets one object.

    @train_app.command("finetune")
    @from_config("config", FinetuneConfig, FINETUNE_HELP)
    def finetune(config: FinetuneConfig = FROM_FLAGS) -> None: ...

Typer reads a command's options from its signature; `from_config` gives the command a signature with the field
options in place of `config`, and builds the config from them on each call.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])

FROM_FLAGS: Any = None  # default of the parameter `from_config` replaces (only so Python allows it after options)


def from_config(param: str, config: type, help: Mapping[str, str], *, overrides: bool = False) -> Callable[[F], F]:
    """Replace the command's parameter `param` by one option per field of `config` that `help` describes, in the
    config's field order. The command receives `config(**values)`; with `overrides`, every option defaults to None
    (not given) and the command receives the dict of values, for a config that is read elsewhere and only
    adjusted by flags. Tuple fields are one comma-separated flag; a bool field that defaults to True is `--x/--no-x`.
    """
    hints = typing.get_type_hints(config)
    if unknown := sorted(set(help) - set(hints)):
        raise TypeError(f"{config.__name__} has no field {unknown[0]!r}")
    names = [name for name in hints if name in help]
    defaults = dict.fromkeys(names) if overrides else _defaults(config)
    options = [_option(name, hints[name], defaults[name], help[name]) for name in names]

    def decorate(command: F) -> F:
        signature = inspect.signature(command)
        own = typing.get_type_hints(command)
        params = []
        for p in signature.parameters.values():
            params.extend(options if p.name == param else [p.replace(annotation=own.get(p.name, p.annotation))])

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            values = {name: _value(hints[name], kwargs.pop(name)) for name in names}
            kwargs[param] = values if overrides else config(**values)
            return command(**kwargs)

        wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}  # what typer reads the types from
        return typing.cast(F, wrapper)

    return decorate


def _defaults(config: type) -> dict[str, Any]:
    """Each dataclass field's default; `...` (typer's "required") for a field without one."""
    out = {}
    for f in dataclasses.fields(config):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
        else:
            out[f.name] = ...
    return out


def _is_tuple(hint: Any) -> bool:
    return typing.get_origin(hint) is tuple


def _option(name: str, hint: Any, default: Any, help: str) -> inspect.Parameter:
    flag = "--" + name.replace("_", "-")
    if _is_tuple(hint):
        hint = str
        default = ",".join(default) if isinstance(default, tuple) else default
    if hint is bool and default is True:
        flag = f"{flag}/--no-{flag[2:]}"
    if default is None:
        hint = hint | None
    option = typer.Option(default, flag, help=help)
    return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=option, annotation=hint)


def _value(hint: Any, value: Any) -> Any:
    """A flag's value as the field's type: `q_proj,v_proj` for a tuple field becomes ("q_proj", "v_proj")."""
    if _is_tuple(hint) and isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value
