"""`fmstack prompt …`: versioned prompts — create, edit (a new version), show, list, alias, render, diff, log, stats.

Exit code 2, with one clear line, for anything to fix: a missing variable (named), an unknown prompt or version,
a bad template, a bad YAML file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import typer
import yaml

from fmstack.cli.common import JSON, Col, command_group, console, print_json, show_rows
from fmstack.core.errors import FmstackError

prompt_app = command_group(
    "Versioned prompts: Jinja2 templates with parameters, immutable versions, movable aliases.\n\n"
    'Example: fmstack prompt create capitals --user "What is the capital of {{ country }}?" --param temperature=0',
    no_args_is_help=True,
)

SYSTEM = typer.Option(None, "--system", "-s", help="Jinja2 template of the system message.")
USER = typer.Option(None, "--user", "-u", help="Jinja2 template of the user message.")
PARAM = typer.Option(None, "--param", "-p", help="A model parameter, KEY=VALUE (temperature=0, max_tokens=64…).")
MODEL = typer.Option(None, "--model", "-m", help="The model this prompt is meant for (stored in its params).")
FILE = typer.Option(None, "--file", "-f", help="YAML file with system, user, examples, params (and note).")
NOTE = typer.Option(None, "--note", help="What this version changes.")
FILE_FIELDS = ("name", "system", "user", "examples", "params", "note")


def _store():
    from fmstack.app.prompts import PromptStore

    return PromptStore.open()


def _scalar(text: str) -> Any:
    """A --param or --var value: YAML scalars (0, 0.5, true, [a, b]) as such, anything else as text."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return text if value is None and text.strip() not in ("null", "~") else value


def _pairs(items: list[str] | None, flag: str, parse_values: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise FmstackError(f"{flag} {item!r}: write KEY=VALUE.")
        out[key.strip()] = _scalar(value) if parse_values else value
    return out


def _read_file(path: Path) -> dict[str, Any]:
    from fmstack.app.prompts import PromptError
    from fmstack.core.yamlfile import line_of, read_yaml

    data, root = read_yaml(path, "prompt file", PromptError)
    if not isinstance(data, dict):
        raise PromptError(f"{path}: a prompt file is a mapping with 'system' and/or 'user' (and examples, params).")
    for key in data:
        if key not in FILE_FIELDS:
            raise PromptError(
                f"{path}:{line_of(root, (key,))}: {key}: unknown field; known: {', '.join(FILE_FIELDS)}.", param=key
            )
    return data


def _content(base: dict[str, Any], system, user, params: dict, model: str | None, unset: list[str] | None, where):
    from fmstack.app.prompts import PromptContent

    data = {k: v for k, v in base.items() if k in ("system", "user", "examples", "params")}
    data["params"] = dict(data.get("params") or {})
    if system is not None:
        data["system"] = system
    if user is not None:
        data["user"] = user
    data["params"].update(params)
    if model:
        data["params"]["model"] = model
    for key in unset or []:
        data["params"].pop(key, None)
    return PromptContent.build(data, where)


def _report(saved) -> None:
    p = saved.prompt
    uses = ", ".join(p.variables) or "none"
    if saved.created:
        console.print(f"created [cyan]{p.label}[/] (variables: {uses})", soft_wrap=True)
    else:
        console.print(
            f"unchanged: identical to the latest version [cyan]{p.label}[/]; no new version was stored", soft_wrap=True
        )


@prompt_app.command("create")
def create(
    name: str = typer.Argument(None, help="The prompt's name (default: `name:` in --file)."),
    file: Path = FILE,
    system: str = SYSTEM,
    user: str = USER,
    param: list[str] = PARAM,
    model: str = MODEL,
    note: str = NOTE,
) -> None:
    """Create a prompt (its version 1) from flags or a YAML file.

    Example: fmstack prompt create capitals --system "Answer with the city only." --user "Capital of {{ country }}?"
    --param temperature=0 --param max_tokens=16
    """
    base = _read_file(file) if file else {}
    name = name or base.get("name")
    if not name:
        raise FmstackError("Name the prompt: fmstack prompt create NAME (or `name:` in --file).")
    content = _content(base, system, user, _pairs(param, "--param", True), model, None, str(file or name))
    store = _store()
    if store.exists(name):
        latest = store.get(name)
        if latest.content_hash != content.content_hash:
            raise FmstackError(
                f"Prompt '{name}' already exists (latest: {latest.label}); "
                f"save a new version with `fmstack prompt edit {name}`."
            )
    _report(store.save(name, content, note or base.get("note")))


@prompt_app.command("edit")
def edit(
    name: str = typer.Argument(..., help="The prompt to change."),
    file: Path = FILE,
    system: str = SYSTEM,
    user: str = USER,
    param: list[str] = PARAM,
    unset: list[str] = typer.Option(None, "--unset", help="Remove a parameter (repeatable)."),
    model: str = MODEL,
    base: str = typer.Option(None, "--from", help="Start from this version or alias instead of the latest."),
    note: str = NOTE,
) -> None:
    """Save a new version: from a YAML file, from flags changing parts of the latest version, or in $EDITOR.

    Example: fmstack prompt edit capitals --user "What is the capital city of {{ country }}?" --note "clearer"
    """
    store = _store()
    start = store.get(f"{name}@{base}" if base else name)
    flags = any(x is not None for x in (system, user, model)) or bool(param) or bool(unset)
    if file:
        data = _read_file(file)
    elif flags:
        data = start.content.canonical()
    elif sys.stdin.isatty() and os.environ.get("EDITOR"):
        data = _edit_in_editor(start)
    else:
        raise FmstackError(
            "Say what changes: --file FILE, or flags (--system, --user, --param, --unset, --model); "
            "in a terminal with $EDITOR set, run without them to edit the latest version."
        )
    content = _content(data, system, user, _pairs(param, "--param", True), model, unset, str(file or name))
    _report(store.save(name, content, note or data.get("note")))


def _edit_in_editor(start) -> dict[str, Any]:
    text = yaml.safe_dump(start.content.canonical(), sort_keys=False, allow_unicode=True, width=1000)
    with tempfile.NamedTemporaryFile("w+", suffix=".yaml", delete=False) as f:
        f.write(f"# {start.label}: edit and save; the new content becomes the next version.\n{text}")
        path = Path(f.name)
    try:
        subprocess.run([*os.environ["EDITOR"].split(), str(path)], check=True)
        return _read_file(path)
    except subprocess.CalledProcessError as exc:
        raise FmstackError(f"The editor exited with {exc.returncode}; nothing was saved.") from None
    finally:
        path.unlink(missing_ok=True)


@prompt_app.command("show")
def show(
    ref: str = typer.Argument(..., help="NAME (latest), NAME@VERSION or NAME@ALIAS."),
    as_json: bool = typer.Option(False, "--json", help="Print the version as JSON (as the HTTP API gives it)."),
) -> None:
    """Show one version: its parts, variables, parameters, aliases and hash.

    Example: fmstack prompt show capitals@production
    """
    p = _store().get(ref)
    if as_json:
        print_json(p)
        return
    aliases = f"  aliases: {', '.join(p.aliases)}" if p.aliases else ""
    console.print(f"[bold cyan]{p.label}[/]  created {p.created_at:%Y-%m-%d %H:%M:%S}{aliases}", soft_wrap=True)
    console.print(f"hash: {p.content_hash[:16]}  variables: {', '.join(p.variables) or 'none'}", soft_wrap=True)
    if p.note:
        console.print(f"note: {p.note}", soft_wrap=True)
    console.print()
    console.print(p.content.as_text(), markup=False, highlight=False, soft_wrap=True, end="")


PROMPT_COLUMNS = (
    Col("name", lambda p: p.name, no_wrap=True),
    Col("latest", lambda p: str(p.latest)),
    Col("versions", lambda p: str(p.versions)),
    Col("aliases", lambda p: ", ".join(f"{a}→{v}" for a, v in p.aliases.items()) or "-"),
    Col("updated", lambda p: f"{p.updated_at:%Y-%m-%d %H:%M}"),
)


@prompt_app.command("list")
def list_prompts(as_json: bool = JSON) -> None:
    """List prompts: latest version, number of versions, aliases.

    Example: fmstack prompt list --json
    """
    show_rows(_store().list(), PROMPT_COLUMNS, as_json)


@prompt_app.command("alias")
def alias(
    name: str = typer.Argument(..., help="The prompt."),
    alias_name: str = typer.Argument(..., metavar="ALIAS", help="production, staging… ([a-z0-9_-]+)."),
    version: str = typer.Argument(..., help="A version (3 or v3), 'latest', or another alias."),
) -> None:
    """Point an alias at a version; to roll back, point it at the previous one. Every move is recorded.

    Example: fmstack prompt alias capitals production 2
    """
    move = _store().set_alias(name, alias_name, int(version) if version.isdigit() else version)
    if not move.moved:
        console.print(f"{name}@{alias_name} already points at version {move.to_version}")
    elif move.from_version is None:
        console.print(f"{name}@{alias_name} → version {move.to_version} (new alias)")
    else:
        console.print(f"{name}@{alias_name}: version {move.from_version} → {move.to_version}")


@prompt_app.command("render")
def render(
    ref: str = typer.Argument(..., help="NAME, NAME@VERSION or NAME@ALIAS."),
    var: list[str] = typer.Option(None, "--var", "-v", help="A variable, KEY=VALUE (repeatable); values are text."),
    vars_file: Path = typer.Option(None, "--vars", help="YAML or JSON file of variables (any values)."),
) -> None:
    """Render a version with variables and print the messages as JSON; a missing variable is named (exit 2).

    Example: fmstack prompt render capitals@production --var country=France
    """
    from fmstack.app.prompts import PromptError

    variables: dict[str, Any] = {}
    if vars_file:
        from fmstack.core.yamlfile import read_yaml

        data, _ = read_yaml(vars_file, "variables file", PromptError)
        if not isinstance(data, dict):
            raise PromptError(f"{vars_file}: variables are a mapping of name: value.")
        variables |= data
    variables |= _pairs(var, "--var", False)
    messages = _store().get(ref).render(variables)
    print_json(messages)


@prompt_app.command("diff")
def diff(
    ref_a: str = typer.Argument(..., help="The older version, e.g. capitals@1 or capitals@production."),
    ref_b: str = typer.Argument(..., help="The newer one, e.g. capitals@2 or capitals (the latest)."),
) -> None:
    """Unified diff of two versions' parts (system, examples, user) and parameters.

    Example: fmstack prompt diff capitals@1 capitals@production
    """
    text = _store().diff(ref_a, ref_b)
    if not text:
        console.print(f"{ref_a} and {ref_b} have the same content")
        return
    for line in text.splitlines():
        style = "green" if line.startswith("+") else "red" if line.startswith("-") else None
        style = "bold" if line.startswith(("+++", "---")) else "cyan" if line.startswith("@@") else style
        console.print(line, style=style, markup=False, highlight=False, soft_wrap=True)


@prompt_app.command("log")
def log(name: str = typer.Argument(..., help="The prompt.")) -> None:
    """A prompt's history: every version (with its note) and every alias move, oldest first.

    Example: fmstack prompt log capitals
    """
    store = _store()
    versions = store.versions(name)
    events = [(v.created_at, f"version {v.version} saved" + (f": {v.note}" if v.note else "")) for v in versions]
    for m in store.moves(name):
        what = f"{m.alias} → {m.to_version}" + (f" (was {m.from_version})" if m.from_version is not None else " (new)")
        events.append((m.moved_at, what))
    for when, what in sorted(events, key=lambda e: e[0]):
        console.print(f"{when:%Y-%m-%d %H:%M:%S}  {what}", markup=False, highlight=False, soft_wrap=True)


@prompt_app.command("stats")
def stats(name: str = typer.Argument(..., help="The prompt."), as_json: bool = JSON) -> None:
    """Per version, from the traces of calls made through the prompt: requests, errors, latency, tokens, cost and
    feedback.

    Example: fmstack prompt stats capitals
    """
    from fmstack.core.store.traces import prompt_stats

    store = _store()
    with store.sessions() as session:
        rows = prompt_stats(session, name)
    if not rows and not as_json:
        console.print(
            f"No traces of prompt '{name}' yet: call it through /v1/prompts/{name}/chat/completions.", soft_wrap=True
        )
        return
    show_rows(rows, _stats_columns(store.aliases(name)), as_json)


def _stats_columns(aliases: dict[str, int]) -> tuple[Col, ...]:
    """The stats table's columns; a version's cell names the aliases that point at it now."""

    def version(r: dict) -> str:
        tags = [a for a, v in aliases.items() if v == r["version"]]
        return f"{r['version']}" + (f" ({', '.join(tags)})" if tags else "")

    return (
        Col("version", version, no_wrap=True),
        Col("requests", lambda r: str(r["requests"])),
        Col("errors", lambda r: str(r["errors"])),
        Col("latency ms", lambda r: _num(r["latency_ms"])),
        Col("ttft ms", lambda r: _num(r["ttft_ms"])),
        Col("tokens in/out", lambda r: f"{_num(r['prompt_tokens'], 1)}/{_num(r['completion_tokens'], 1)}"),
        Col("cost $", lambda r: f"{r['cost']:.6f}"),
        Col("feedback +/-", lambda r: f"{r['thumbs_up']}/{r['thumbs_down']}"),
    )


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"
