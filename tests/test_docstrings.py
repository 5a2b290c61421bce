"""Every ```python example in fmstack's docstrings (and in the top-level pages, README.md and ARCHITECTURE.md)
names only what exists: each module it imports from fmstack imports, each name it imports is there, and so is each
attribute it reads off one of them (`prompts.render`, `PromptStore.open`); a function it calls by name is imported
or defined in it. The examples are not run: they load models and write to the store."""

from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).parents[1]
SRC = ROOT / "src" / "fmstack"
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def examples() -> Iterator[tuple[str, str]]:
    """(where, code) of every python block in a docstring under src/fmstack, then in the top-level pages (README,
    ARCHITECTURE)."""
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, DOCUMENTED):
                for code in FENCE.findall(ast.get_docstring(node) or ""):
                    yield f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 1)}", code
    for page in sorted(ROOT.glob("*.md")):
        for code in FENCE.findall(page.read_text(encoding="utf-8")):
            yield page.name, code


def problems(code: str) -> list[str]:
    """What the example names from fmstack that does not exist."""
    tree = ast.parse(code)
    bound: dict[str, Any] = {}
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "fmstack" and not node.level:
            module = _import(node.module, found)
            for alias in node.names:
                value = _attribute(module, alias.name, node.module, found) if module else None
                bound[alias.asname or alias.name] = value
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "fmstack":
                    module = _import(alias.name, found)
                    bound[alias.asname or "fmstack"] = module if alias.asname else _import("fmstack", found)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            _check_chain(node, bound, found)
    found += _undefined_calls(tree)
    return list(dict.fromkeys(found))  # `a.b.c` and its inner `a.b` may report the same name


def _undefined_calls(tree: ast.Module) -> list[str]:
    """Functions called by a bare name that the example neither imports nor defines (placeholder *values* such as
    `texts` are fine: a reader fills them in; a function that does not exist is not)."""
    defined = set(dir(builtins))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            defined |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            defined.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            defined.add(node.id)
    calls = (n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name))
    return [f"calls {name}(), which it neither imports nor defines" for name in calls if name not in defined]


def _import(name: str, found: list[str]) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        found.append(f"import {name}: {exc}")
        return None


def _attribute(owner: Any, name: str, where: str, found: list[str]) -> Any:
    """`owner.name`, or the submodule of that name; None (and a problem noted) when neither exists."""
    if hasattr(owner, name):
        return getattr(owner, name)
    if isinstance(owner, ModuleType):
        try:
            return importlib.import_module(f"{owner.__name__}.{name}")
        except ModuleNotFoundError:
            pass
    found.append(f"{where} has no {name!r}")
    return None


def _check_chain(node: ast.Attribute, bound: dict[str, Any], found: list[str]) -> None:
    """Follow `name.a.b` from an imported fmstack module or class while the values are modules or classes."""
    chain: list[str] = []
    value: ast.expr = node
    while isinstance(value, ast.Attribute):
        chain.insert(0, value.attr)
        value = value.value
    if not isinstance(value, ast.Name) or bound.get(value.id) is None:
        return
    owner, where = bound[value.id], value.id
    for name in chain:
        if not (isinstance(owner, ModuleType) or inspect.isclass(owner)):
            return  # an instance or a function: what it has is not known without running the example
        owner = _attribute(owner, name, where, found)
        if owner is None:
            return
        where = f"{where}.{name}"


EXAMPLES = list(examples())


def test_the_docstrings_have_examples_to_check():
    assert len([where for where, _ in EXAMPLES if where.startswith("src/")]) >= 5


def test_a_name_that_does_not_exist_is_caught():
    assert problems("from fmstack.app.rag import Rag, build_messages") == ["fmstack.app.rag has no 'build_messages'"]
    assert problems("from fmstack.app import prompts\nprompts.PromptStore.open()\nprompts.rendr('x')") == [
        "prompts has no 'rendr'"
    ]
    assert problems("import fmstack.nothing") == ["import fmstack.nothing: No module named 'fmstack.nothing'"]
    assert problems("from fmstack.app.rag import Rag\nmessages = build_messages(question, hits)") == [
        "calls build_messages(), which it neither imports nor defines"
    ]


@pytest.mark.parametrize("code", [code for _, code in EXAMPLES], ids=[where for where, _ in EXAMPLES])
def test_every_name_an_example_uses_exists(code: str):
    assert problems(code) == []
