"""Deterministic metrics: checks with one right answer (exact match, substrings, regexes, JSON, numbers).

They are cheap, need no model, and say *why* a case failed in `reason`, so they are the first metrics to reach for
when an output has a checkable form.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import jsonschema
from jsonschema.exceptions import SchemaError
from pydantic import Field, field_validator

from fmstack.app.eval.metrics.base import Case, Metric, MetricContext, Output, Score, register

NO_REFERENCE = "case has no reference"

# A ```json (or bare ```) fenced block: chat models often wrap JSON in one even when asked not to.
_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n(.*?)```", re.DOTALL)

# A number as people and models write it: sign, thousands separators, decimals, exponent. The sign only counts
# when it does not follow a word or digit, so "pages 3-4" yields 4, not -4.
_NUMBER = re.compile(r"(?:(?<![\w)])[-+])?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?")


def _binary(metric: Metric, ok: bool, reason: str | None = None, **details: Any) -> Score:
    value = 1.0 if ok else 0.0
    return Score(value, passed=metric.judge_pass(value), reason=reason, details=details)


def _normalize(text: str, *, ignore_case: bool, strip: bool = True) -> str:
    text = text.strip() if strip else text
    return text.casefold() if ignore_case else text


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@register("exact_match")
class ExactMatch(Metric):
    """The output equals one of the references (after optional case-folding and whitespace stripping)."""

    requires = frozenset({"reference"})
    ignore_case: bool = True
    strip: bool = True

    def score(self, case: Case, output: Output, ctx: MetricContext) -> Score:
        if not case.references:
            return Score(None, error=NO_REFERENCE)
        got = _normalize(output.text, ignore_case=self.ignore_case, strip=self.strip)
        for reference in case.references:
            if got == _normalize(reference, ignore_case=self.ignore_case, strip=self.strip):
                return _binary(self, True, matched=reference)
        return _binary(self, False, f"output matches none of {len(case.references)} reference(s)")


@register("contains")
class Contains(Metric):
    """The output contains `value`, or (without `value`) any of the case's references."""

    ignore_case: bool = True
    value: str | None = None

    def score(self, case: Case, output: Output, ctx: MetricContext) -> Score:
        needles = [self.value] if self.value is not None else case.references
        if not needles:
            return Score(None, error=NO_REFERENCE + " (and the metric has no `value`)")
        haystack = _normalize(output.text, ignore_case=self.ignore_case, strip=False)
        for needle in needles:
            if _normalize(needle, ignore_case=self.ignore_case, strip=False) in haystack:
                return _binary(self, True, matched=needle)
        missing = ", ".join(repr(_short(n, 40)) for n in needles)
        return _binary(self, False, f"output does not contain {missing}")


@register("regex")
class Regex(Metric):
    """`pattern` is found anywhere in the output (`re.search`; anchor with ^/$ or use (?i) flags inline)."""

    pattern: str

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        # Rejected when the suite is loaded, not on the first case: a typo in a regex should not cost a run.
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"invalid regular expression `{pattern}`: {exc}") from exc
        return pattern

    def score(self, case: Case, output: Output, ctx: MetricContext) -> Score:
        match = re.search(self.pattern, output.text)
        if match:
            return _binary(self, True, match=match.group(0))
        return _binary(self, False, f"pattern `{self.pattern}` not found in output")


def extract_json_text(text: str) -> str:
    """The JSON part of an output: the content of its single fenced block if it has exactly one, else all of it."""
    blocks = _FENCE.findall(text)
    return blocks[0].strip() if len(blocks) == 1 else text.strip()


def parse_json(text: str) -> tuple[Any, str | None]:
    """(value, None) when the output is JSON (possibly fenced), else (None, why not)."""
    try:
        return json.loads(extract_json_text(text)), None
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"


@register("json_valid")
class JsonValid(Metric):
    """The output parses as JSON (a single ```json fenced block is unwrapped first)."""

    def score(self, case: Case, output: Output, ctx: MetricContext) -> Score:
        _, problem = parse_json(output.text)
        return _binary(self, problem is None, problem)


@register("json_schema")
class JsonSchema(Metric):
    """The output is JSON that validates against `schema` (JSON Schema, any draft `jsonschema` supports).

    The parameter is called `schema` in suites; the Python attribute is `json_schema` because pydantic's
    BaseModel already has a `schema` attribute.
    """

    json_schema: dict[str, Any] = Field(alias="schema")

    @field_validator("json_schema")
    @classmethod
    def _valid_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except SchemaError as exc:
            raise ValueError(f"invalid JSON schema: {exc.message}") from exc
        return schema

    def score(self, case: Case, output: Output, ctx: MetricContext) -> Score:
        value, problem = parse_json(output.text)
        if problem is not None:
            return _binary(self, False, problem)
        validator = jsonschema.validators.validator_for(self.json_schema)(self.json_schema)
        errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        if not errors:
            return _binary(self, True)
        messages = [f"at {_json_path(e.absolute_path)}: {_short(e.message, 160)}" for e in errors]
        return _binary(self, False, "; ".join(messages[:3]), errors=messages)


@register("json_match")
class JsonMatch(Metric):
    """The output's JSON equals a reference's JSON: the same values, whatever the formatting (key order, spaces,
    a ```json fence). For extraction tasks, where a model that gets every field right in another layout has not
    failed the task the way exact_match says."""

    requires = frozenset({"reference"})

    def score(self, case: Case, output: Output, ctx: MetricContext) -> Score:
        value, problem = parse_json(output.text)
        if problem is not None:
            return _binary(self, False, problem)
        for reference in case.references:
            expected, bad = parse_json(reference)
            if bad is None and value == expected:
                return _binary(self, True)
        return _binary(self, False, f"JSON differs from the reference: {_short(json.dumps(value), 160)}")


def _json_path(path: Any) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def extract_last_number(text: str) -> float | None:
    """The last number written in `text` ("The answer is 1,234.5." gives 1234.5), or None."""
    matches = _NUMBER.findall(text)
    return float(matches[-1].replace(",", "")) if matches else None


@register("numeric")
class Numeric(Metric):
    """The last number in the output equals the reference number, within `tolerance`.

    The tolerance is absolute, or relative to the reference when `relative` is set (so 0.01 means 1%).
    Several references mean several acceptable numbers.
    """

    requires = frozenset({"reference"})
    tolerance: float = Field(default=1e-6, ge=0)
    relative: bool = False

    def score(self, case: Case, output: Output, ctx: MetricContext) -> Score:
        if not case.references:
            return Score(None, error=NO_REFERENCE)
        expected = [extract_last_number(r) for r in case.references]
        if any(e is None for e in expected):
            return Score(None, error=f"reference is not a number: {case.references!r}")
        got = extract_last_number(output.text)
        if got is None:
            return _binary(self, False, "no number in output")
        if any(self._close(got, e) for e in expected if e is not None):
            return _binary(self, True, extracted=got)
        wanted = " or ".join(f"{e:g}" for e in expected if e is not None)
        return _binary(self, False, f"got {got:g}, expected {wanted}", extracted=got)

    def _close(self, got: float, expected: float) -> bool:
        allowed = self.tolerance * abs(expected) if self.relative else self.tolerance
        return math.isclose(got, expected, rel_tol=0.0, abs_tol=allowed)
