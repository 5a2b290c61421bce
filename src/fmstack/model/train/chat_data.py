"""Training files in chat format, validated before any model is loaded.

A file is JSONL (one JSON object per line) or JSON (an array of objects). Each record is validated with a pydantic
model; the first problem becomes one InvalidRequest naming the file, the record's line and the field, e.g.
`sft.jsonl:7: messages[1].role: Input should be 'system', 'user' or 'assistant'.` Trainers call the loaders
first, so a broken line costs seconds, not a training run.

`read_records` and `validate_record` are the reusable parts: a loader for another record shape (preference
pairs) is a pydantic model plus three lines.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, PrivateAttr, StrictStr, ValidationError, ValidationInfo, field_validator

from fmstack.core.errors import InvalidRequest
from fmstack.core.yamlfile import dotted


class Record(BaseModel):
    """A validated training record that remembers its line, so later checks (length, template) can point at it."""

    model_config = ConfigDict(extra="ignore")
    _line: int = PrivateAttr(default=0)

    @property
    def line(self) -> int:
        return self._line


M = TypeVar("M", bound=Record)


@dataclass(frozen=True)
class RawRecord:
    """One JSON object from a training file and the 1-based line it starts on."""

    line: int
    data: Any


class Message(BaseModel):
    """A chat turn. Extra keys (name, ids from a trace export) are ignored: they do not reach the template."""

    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant"]
    content: StrictStr


class SftRecord(Record):
    messages: list[Message]

    @field_validator("messages")
    @classmethod
    def _learns_something(cls, messages: list[Message]) -> list[Message]:
        if not any(m.role == "assistant" for m in messages):
            raise ValueError("no assistant turn; the loss is computed on assistant messages only, add one")
        return messages


def load_sft(path: Path) -> list[SftRecord]:
    """Every record of an SFT file, or InvalidRequest at the first bad one."""
    return [validate_record(SftRecord, raw, path) for raw in read_records(path, "messages")]


class _Pair(Record):
    """A DPO preference pair: for one prompt, the answer to prefer and the one to avoid."""

    @field_validator("rejected", check_fields=False)
    @classmethod
    def _differs(cls, rejected: Any, info: ValidationInfo) -> Any:
        chosen = info.data.get("chosen")
        if chosen is not None and _answer_text(chosen) == _answer_text(rejected):
            raise ValueError("the same as chosen; a preference pair needs two different answers")
        return rejected

    def to_trl(self) -> dict[str, Any]:
        """The record as TRL's DPOTrainer reads it (standard or conversational format)."""
        return self.model_dump(include={"prompt", "chosen", "rejected"})


class StandardPair(_Pair):
    """TRL's standard format: the prompt and both answers as plain text."""

    prompt: StrictStr
    chosen: StrictStr
    rejected: StrictStr

    @field_validator("prompt", "chosen", "rejected")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("is empty")
        return value


class ConversationalPair(_Pair):
    """TRL's conversational format: the prompt as chat messages, each answer as assistant messages."""

    prompt: list[Message]
    chosen: list[Message]
    rejected: list[Message]

    @field_validator("prompt")
    @classmethod
    def _ends_with_user(cls, messages: list[Message]) -> list[Message]:
        if not messages or messages[-1].role != "user":
            raise ValueError("must end with the user's turn that chosen and rejected answer")
        return messages

    @field_validator("chosen", "rejected", mode="before")
    @classmethod
    def _same_format(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError(
                'a string, but the prompt is a list of messages; write [{"role": "assistant", "content": ...}] '
                "(or make the prompt a string too)"
            )
        return value

    @field_validator("chosen", "rejected")
    @classmethod
    def _assistant_answer(cls, messages: list[Message]) -> list[Message]:
        if not messages or any(m.role != "assistant" for m in messages):
            raise ValueError("must be assistant messages (role 'assistant'), at least one")
        if not _answer_text(messages):
            raise ValueError("is empty")
        return messages


PreferenceRecord = StandardPair | ConversationalPair


def load_preferences(path: Path) -> list[PreferenceRecord]:
    """Every pair of a DPO file (prompt, chosen, rejected), all in one of TRL's two formats, or InvalidRequest at
    the first bad one."""
    records: list[PreferenceRecord] = []
    for raw in read_records(path, "prompt, chosen and rejected"):
        model = ConversationalPair if isinstance(raw.data.get("prompt"), list) else StandardPair
        if records and model is not type(records[0]):
            first = "messages" if isinstance(records[0], ConversationalPair) else "a string"
            raise InvalidRequest(
                f"{path}:{raw.line}: prompt: the format differs from line {records[0].line}, whose prompt is "
                f"{first}; write every record in one format (all strings, or all message lists)."
            )
        records.append(validate_record(model, raw, path))
    return records


def _answer_text(answer: str | list[Message]) -> str:
    return (answer if isinstance(answer, str) else "\n".join(m.content for m in answer)).strip()


def read_records(path: Path, fields: str) -> list[RawRecord]:
    """The JSON objects of a JSONL or JSON file; `fields` names what a record holds, for error messages."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"{path}: cannot read the training file ({exc}).") from exc
    if not text.strip():
        raise InvalidRequest(f"{path}: the file is empty; write one JSON object with {fields} per line.")
    records = _json_array(text, path) if text.lstrip().startswith("[") else _jsonl(text, path)
    for raw in records:
        if not isinstance(raw.data, dict):
            kind = type(raw.data).__name__
            raise InvalidRequest(f"{path}:{raw.line}: expected a JSON object with {fields}, got a {kind}.")
    if not records:
        raise InvalidRequest(f"{path}: no records; write one JSON object with {fields} per line.")
    return records


def validate_record(model: type[M], raw: RawRecord, path: Path) -> M:
    """`raw` validated as `model`, or InvalidRequest with the file, line and field of the first problem."""
    try:
        record = model.model_validate(raw.data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = dotted(tuple(first["loc"]))
        if first["type"] == "missing":
            problem = "required field is missing"
        elif "error" in first.get("ctx", {}):
            problem = str(first["ctx"]["error"])
        else:
            problem = first["msg"]
        raise InvalidRequest(f"{path}:{raw.line}: {field}: {problem}.") from None
    record._line = raw.line
    return record


def _jsonl(text: str, path: Path) -> list[RawRecord]:
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(RawRecord(number, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise InvalidRequest(
                f"{path}:{number}: not valid JSON ({exc.msg} at column {exc.colno}); each line must be one object."
            ) from None
    return records


def _json_array(text: str, path: Path) -> list[RawRecord]:
    """A JSON array, element by element, so each record keeps the line it starts on."""
    decoder, records = json.JSONDecoder(), []
    pos = _skip(text, text.index("[") + 1)
    while pos < len(text) and text[pos] != "]":
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"{path}:{exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno}).") from None
        records.append(RawRecord(text.count("\n", 0, pos) + 1, value))
        pos = _skip(text, end)
        if pos < len(text) and text[pos] == ",":
            pos = _skip(text, pos + 1)
        elif pos < len(text) and text[pos] != "]":
            line = text.count("\n", 0, pos) + 1
            raise InvalidRequest(f"{path}:{line}: not valid JSON (expected ',' or ']' between records).")
    if pos >= len(text) or text[pos + 1 :].strip():
        line = text.count("\n", 0, min(pos, len(text))) + 1
        raise InvalidRequest(f"{path}:{line}: not valid JSON (the array is not closed, or text follows it).")
    return records


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos
