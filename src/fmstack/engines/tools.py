"""Tool calling for local models: the prompt that offers the tools, the grammar that makes every call valid, and
the parser that turns the model's text back into OpenAI `tool_calls`.

Calls are written the way Qwen2.5 (and other Hermes-style templates) write them:

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

A chat template that knows tools renders them itself; for one that does not, `generic_messages` puts a documented
system prompt (`GENERIC_PROMPT`) in front and writes earlier calls and results in the same format. The grammar
constrains each call to a known tool name and that tool's JSON schema, so arguments always parse and validate:
eagerly for `tool_choice` "required" or a named function, lazily for "auto" (free text until the model opens
`<tool_call>`; llama.cpp's lazy grammar sampler).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass

import jsonschema
from llama_cpp.llama_grammar import json_schema_to_gbnf

from fmstack.core.errors import InvalidRequest

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CALL = re.compile(re.escape(OPEN) + r"\s*(.*?)\s*" + re.escape(CLOSE), re.S)
TRIGGERS = (r"^[\s\S]*?(<tool_call>)[\s\S]*", r'^\s*(\{\s*"name")[\s\S]*')
NO_CALL = "root ::= [^{<] [^\\x00]*"  # an answer that does not open with a call, tagged or bare
GENERIC_PROMPT = (
    "You can call functions to help answer. The functions, as JSON schemas:\n{tools}\n\n"
    "To call a function, reply with nothing but one block per call:\n"
    '<tool_call>\n{{"name": "<function name>", "arguments": {{<arguments as JSON>}}}}\n</tool_call>\n'
    "A function's result comes back to you in a <tool_response> block. If no function is needed, answer normally."
)


@dataclass(frozen=True)
class LazyGrammar:
    """A grammar that starts only where a pattern over the generated text matches (its first group)."""

    grammar: str
    patterns: tuple[str, ...]


@dataclass
class ToolPlan:
    """How a request with tools reaches the model: the messages to render, the tools for a template that knows
    them (None: they are in the messages), and the grammar that keeps calls valid."""

    messages: list[dict]
    tools: list[dict] | None
    constraint: str | LazyGrammar | None


def involved(messages: list[dict] | None, tools: list[dict] | None) -> bool:
    return bool(tools) or any(m.get("tool_calls") or m["role"] == "tool" for m in messages or [])


def plan(
    messages: list[dict],
    tools: list[dict] | None,
    tool_choice,
    parallel: bool,
    template_knows_tools: bool,
    response_format: dict | None,
) -> ToolPlan:
    check_tool_messages(messages)
    functions, required = offered(check_tools(tools), tool_choice) if tools else ([], False)
    if tool_choice not in (None, "auto", "none") and not tools:
        raise InvalidRequest("tool_choice needs 'tools'.", param="tool_choice")
    if functions and (response_format or {}).get("type") not in (None, "text"):
        raise InvalidRequest("Send either tools or a JSON response_format, not both.", param="response_format")
    grammar = constraint(functions, required, parallel)
    if tool_choice == "none" and any(m.get("tool_calls") for m in messages):
        grammar = NO_CALL  # after calls in the history a model tends to write another: "none" means text
    if template_knows_tools:
        offered_tools = [{"type": "function", "function": f} for f in functions] or None
        return ToolPlan(template_messages(messages), offered_tools, grammar)
    return ToolPlan(generic_messages(messages, functions), None, grammar)


def check_tools(tools: list[dict]) -> list[dict]:
    """The function definitions, validated: a clear 400 naming the field instead of a broken grammar later."""
    functions = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("function"), dict):
            raise InvalidRequest('Each tool must be {"type": "function", "function": {...}}.', param=f"tools.{i}")
        function = tool["function"]
        if not isinstance(function.get("name"), str) or not _NAME.fullmatch(function["name"]):
            raise InvalidRequest("A function name is 1-64 letters, digits, _ or -.", param=f"tools.{i}.function.name")
        parameters = function.get("parameters", {"type": "object", "properties": {}})
        try:
            jsonschema.Draft202012Validator.check_schema(parameters)
        except jsonschema.SchemaError as exc:
            raise InvalidRequest(
                f"Function '{function['name']}' has an invalid JSON schema: {exc.message}",
                param=f"tools.{i}.function.parameters",
            ) from None
        functions.append(function | {"parameters": parameters})
    if len({f["name"] for f in functions}) != len(functions):
        raise InvalidRequest("Two tools have the same function name.", param="tools")
    return functions


def offered(functions: list[dict], tool_choice: str | dict | None) -> tuple[list[dict], bool]:
    """(the functions the model may call, whether it must call one), from OpenAI's `tool_choice`."""
    if tool_choice in (None, "auto"):
        return functions, False
    if tool_choice == "none":
        return [], False
    if tool_choice == "required":
        return functions, True
    name = (tool_choice.get("function") or {}).get("name") if isinstance(tool_choice, dict) else None
    chosen = [f for f in functions if f["name"] == name]
    if not chosen:
        raise InvalidRequest(
            "tool_choice must be none, auto, required or {'type': 'function', 'function': {'name': …}} naming one "
            "of the tools.",
            param="tool_choice",
        )
    return chosen, True


def constraint(functions: list[dict], required: bool, parallel: bool) -> str | LazyGrammar | None:
    if not functions:
        return None
    schema = {
        "anyOf": [
            {
                "type": "object",
                "properties": {"name": {"const": f["name"]}, "arguments": f["parameters"]},
                "required": ["name", "arguments"],
            }
            for f in functions
        ]
    }
    call_rules = re.sub(
        r"^root ::=", "call ::=", json_schema_to_gbnf(json.dumps(schema), ["name", "arguments"]), flags=re.M
    )
    one = r'"<tool_call>\n" call "\n</tool_call>"'
    tagged = f"tagged ::= {one}" + (rf' ("\n" {one})*' if parallel else "")
    if required:
        return f"root ::= tagged\n{tagged}\n{call_rules}"
    # auto: free text until the model opens a call, tagged or (as small Qwen2.5 models write it) a bare object
    return LazyGrammar(f"root ::= tagged | call\n{tagged}\n{call_rules}", TRIGGERS)


def template_messages(messages: list[dict]) -> list[dict]:
    """Messages as tool-aware chat templates read them: a call's arguments as an object, not a JSON string."""
    out = []
    for m in messages:
        if m.get("tool_calls"):
            calls = [c | {"function": c["function"] | {"arguments": _arguments(c)}} for c in m["tool_calls"]]
            m = m | {"tool_calls": calls, "content": m.get("content") or ""}
        out.append(m)
    return out


def generic_messages(messages: list[dict], functions: list[dict]) -> list[dict]:
    """For templates that know no tools: the tools in a system prompt, calls and results as plain text."""
    out, rest = [], list(messages)
    if functions:
        described = "\n".join(json.dumps({"type": "function", "function": f}) for f in functions)
        system = GENERIC_PROMPT.format(tools=described)
        if rest and rest[0]["role"] == "system":
            system = f"{rest.pop(0)['content']}\n\n{system}"
        out.append({"role": "system", "content": system})
    for m in rest:
        if m.get("tool_calls"):
            blocks = [_block(c["function"]["name"], _arguments(c)) for c in m["tool_calls"]]
            out.append({"role": "assistant", "content": "\n".join([m.get("content") or "", *blocks]).strip()})
        elif m["role"] == "tool":
            out.append({"role": "user", "content": f"<tool_response>\n{m.get('content') or ''}\n</tool_response>"})
        else:
            out.append({"role": m["role"], "content": m.get("content") or ""})
    return out


def parse(text: str) -> tuple[str, list[dict]]:
    """(the text outside calls, the calls in OpenAI's shape). A block that is not a call stays in the text; an
    unfinished last call (the answer ran out of tokens) is dropped."""
    calls, kept, last = [], [], 0
    for match in _CALL.finditer(text):
        try:
            data = json.loads(match.group(1))
            name, arguments = data["name"], data["arguments"]
        except (ValueError, KeyError, TypeError):
            continue
        kept.append(text[last : match.start()])
        last = match.end()
        calls.append(_call(name, arguments))
    rest = text[last:]
    kept.append(rest[: rest.find(OPEN)] if calls and OPEN in rest else rest)  # a call cut off by max_tokens
    if not calls and (bare := _bare_call(text)):
        return "", [bare]
    return "".join(kept).strip() if calls else text, calls


def _bare_call(text: str) -> dict | None:
    """A whole answer that is one call object without its tags (how small Qwen2.5 models often write it)."""
    if not text.lstrip().startswith("{"):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or set(data) != {"name", "arguments"} or not isinstance(data["arguments"], dict):
        return None
    return _call(data["name"], data["arguments"])


class ToolStream:
    """Splits streamed text into content to show now and calls to send at the end: text that could be the start
    of a call is held back until it is clearly not one."""

    def __init__(self) -> None:
        self.text = ""
        self._shown = 0
        self._in_call = False

    def push(self, piece: str) -> str:
        self.text += piece
        if self._in_call:
            return ""
        if (at := self.text.find(OPEN, self._shown)) >= 0:
            self._in_call = True
            return self._show(at)
        if not self._shown and (not self.text.strip() or self.text.lstrip().startswith("{")):
            return ""  # the answer may be a call without tags: held until the end shows what it is
        held = next((k for k in range(len(OPEN) - 1, 0, -1) if self.text.endswith(OPEN[:k])), 0)
        return self._show(len(self.text) - held)

    def finish(self) -> tuple[str, list[dict]]:
        """(content not shown yet, the calls)."""
        content, calls = parse(self.text)
        if calls:
            return "", calls
        return self._show(len(self.text)), []

    def _show(self, upto: int) -> str:
        piece, self._shown = self.text[self._shown : upto], max(self._shown, upto)
        return piece


def check_tool_messages(messages: list[dict]) -> None:
    """Every `tool` message answers a call an earlier assistant message made."""
    called: set[str] = set()
    for i, m in enumerate(messages):
        for call in m.get("tool_calls") or []:
            called.add(call.get("id"))
        if m["role"] == "tool" and m.get("tool_call_id") not in called:
            raise InvalidRequest(
                f"messages[{i}] is a tool result for call {m.get('tool_call_id')!r}, which no earlier assistant "
                "message made.",
                param=f"messages.{i}.tool_call_id",
            )


def _call(name: str, arguments: dict) -> dict:
    arguments_text = json.dumps(arguments, ensure_ascii=False)
    return {
        "id": f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {"name": name, "arguments": arguments_text},
    }


def _arguments(call: dict) -> dict:
    arguments = call["function"].get("arguments") or "{}"
    try:
        return json.loads(arguments) if isinstance(arguments, str) else arguments
    except ValueError:
        raise InvalidRequest("A tool call's arguments must be a JSON object.", param="messages") from None


def _block(name: str, arguments: dict) -> str:
    return f"{OPEN}\n{json.dumps({'name': name, 'arguments': arguments}, ensure_ascii=False)}\n{CLOSE}"
