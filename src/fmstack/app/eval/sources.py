"""Cases from outside the suite file: JSONL, CSV and Parquet files, and stored production traces."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fmstack.app.prompts import PromptStore
from fmstack.core.errors import FmstackError

Row = tuple[str, dict[str, Any]]  # (where it came from: "file:line", the case fields)
JSON_COLUMNS = ("messages", "vars", "context", "metadata", "metrics")


def read_case_file(path: Path, error: Callable[[str], FmstackError]) -> list[Row]:
    """Every row of a case file, each with the place it came from, so errors can name the file and line."""
    if not path.exists():
        raise error(f"{path}: included case file does not exist.")
    readers = {".jsonl": _jsonl, ".csv": _csv, ".parquet": _parquet}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise error(f"{path}: unsupported case file type; use .jsonl, .csv or .parquet.")
    return list(reader(path, error))


def _jsonl(path: Path, error) -> Iterator[Row]:
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise error(f"{path}:{number}: not valid JSON ({exc.msg}).") from None
            if not isinstance(row, dict):
                raise error(f"{path}:{number}: each line must be a JSON object.")
            yield f"{path}:{number}", row


def _csv(path: Path, error) -> Iterator[Row]:
    with path.open(encoding="utf-8", newline="") as f:
        for number, row in enumerate(csv.DictReader(f), 2):
            yield (
                f"{path}:{number}",
                _decode_json_columns({k: v for k, v in row.items() if v not in (None, "")}, f"{path}:{number}", error),
            )


def _parquet(path: Path, error) -> Iterator[Row]:
    import pyarrow.parquet as pq

    for number, row in enumerate(pq.read_table(path).to_pylist(), 1):
        yield (
            f"{path}:row {number}",
            _decode_json_columns({k: v for k, v in row.items() if v is not None}, f"{path}:row {number}", error),
        )


def _decode_json_columns(row: dict, where: str, error) -> dict:
    """Flat formats carry structured fields (messages, vars, …) as JSON text."""
    for key in JSON_COLUMNS:
        if isinstance(row.get(key), str):
            try:
                row[key] = json.loads(row[key])
            except json.JSONDecodeError:
                raise error(f"{where}: column '{key}' must hold JSON.") from None
    return row


def cases_from_traces(filters, sessions) -> list[Row]:
    """Stored successful chat traces as cases: their messages as input; a user's correction as the reference."""
    from fmstack.core.store.traces import list_traces

    if sessions is None:
        raise FmstackError("Cases from traces need the store; run through `fmstack eval run`.")
    name, version = PromptStore(sessions).trace_filter(filters.prompt)
    with sessions() as session:
        traces = list_traces(
            session,
            limit=100_000,
            model=filters.model,
            app=filters.app,
            status="ok",
            since=filters.since,
            prompt_name=name,
            prompt_version=version,
        )
        rows = []
        for t in traces:
            messages = (t.request or {}).get("messages")
            if not messages or not _feedback_matches(t.feedback, filters.feedback):
                continue
            corrections = [f.correction for f in t.feedback if f.correction]
            rows.append(
                (
                    f"trace {t.id}",
                    {
                        "id": t.id,
                        "messages": messages,
                        # a call through a stored prompt: its variables, for other versions to render
                        "vars": variables if isinstance(variables := (t.request or {}).get("variables"), dict) else {},
                        "reference": corrections[-1] if corrections else None,
                        "metadata": {"trace_id": t.id, "model": t.model, "response": t.response_text},
                    },
                )
            )
            if len(rows) >= filters.limit:
                break
    return rows


def _feedback_matches(feedback, wanted: str) -> bool:
    ratings = [f.rating for f in feedback if f.rating is not None]
    return {
        "any": True,
        "positive": bool(ratings) and sum(ratings) > 0,
        "negative": bool(ratings) and sum(ratings) < 0,
        "corrected": any(f.correction for f in feedback),
    }[wanted]
