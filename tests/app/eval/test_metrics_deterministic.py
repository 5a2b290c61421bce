"""Deterministic metrics: exact match, contains, regex, JSON validity and schema, numbers."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fmstack.app.eval.metrics import Case, MetricContext, Output, get_metric
from fmstack.app.eval.metrics.deterministic import extract_json_text, extract_last_number

CTX = MetricContext()


def score(name: str, output: str, reference=None, **params):
    return get_metric(name, params).score(Case(id="c", reference=reference), Output(text=output), CTX)


def test_exact_match_normalizes_and_accepts_any_reference() -> None:
    assert score("exact_match", "  Paris\n", ["Lyon", "paris"]).value == 1.0
    assert score("exact_match", "Paris", "paris", ignore_case=False).value == 0.0
    assert score("exact_match", " Paris", "Paris", strip=False).value == 0.0
    miss = score("exact_match", "Rome", ["Paris", "Lyon"], threshold=1.0)
    assert (miss.value, miss.passed) == (0.0, False)
    assert "2 reference" in miss.reason


def test_reference_metrics_report_missing_reference_as_error_not_zero() -> None:
    for name in ("exact_match", "numeric", "contains"):
        result = score(name, "anything")
        assert result.value is None and "no reference" in result.error


def test_contains_uses_value_or_references() -> None:
    assert score("contains", "The capital is PARIS.", value="paris").value == 1.0
    assert score("contains", "The capital is PARIS.", value="paris", ignore_case=False).value == 0.0
    assert score("contains", "It is Lyon", ["Paris", "Lyon"]).value == 1.0
    miss = score("contains", "It is Rome", ["Paris"])
    assert miss.value == 0.0 and "'Paris'" in miss.reason


def test_regex_searches_and_rejects_bad_patterns_at_construction() -> None:
    assert score("regex", "order #1234 shipped", pattern=r"#\d{4}\b").value == 1.0
    miss = score("regex", "no order here", pattern=r"^#\d+")
    assert miss.value == 0.0 and miss.reason == r"pattern `^#\d+` not found in output"
    with pytest.raises(ValidationError, match=r"invalid regular expression `\(unclosed`: missing \)"):
        get_metric("regex", {"pattern": "(unclosed"})
    with pytest.raises(ValidationError, match="pattern"):
        get_metric("regex", {})  # required parameter


def test_unknown_parameter_is_rejected() -> None:
    with pytest.raises(ValidationError, match="ignorecase"):
        get_metric("exact_match", {"ignorecase": True})


def test_json_valid_tolerates_one_fenced_block() -> None:
    assert score("json_valid", '{"a": [1, 2]}').value == 1.0
    assert score("json_valid", 'Here you go:\n```json\n{"a": 1}\n```\nAnything else?').value == 1.0
    bad = score("json_valid", "{'a': 1}")
    assert bad.value == 0.0 and "not valid JSON" in bad.reason and "line 1" in bad.reason
    assert extract_json_text("```json\n[1]\n```\n```json\n[2]\n```").startswith("```")  # two blocks: ambiguous


SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
}


def test_json_schema_explains_violations() -> None:
    assert score("json_schema", '```json\n{"name": "Ada", "age": 36}\n```', schema=SCHEMA).value == 1.0
    wrong = score("json_schema", '{"name": "Ada", "age": "thirty-six"}', schema=SCHEMA)
    assert wrong.value == 0.0
    assert "$.age" in wrong.reason and "'thirty-six' is not of type 'integer'" in wrong.reason
    missing = score("json_schema", '{"age": -1}', schema=SCHEMA)
    assert "'name' is a required property" in missing.reason and "minimum" in missing.reason
    assert len(missing.details["errors"]) == 2
    assert "not valid JSON" in score("json_schema", "nope", schema=SCHEMA).reason


def test_json_schema_rejects_invalid_schema() -> None:
    with pytest.raises(ValidationError, match="invalid JSON schema"):
        get_metric("json_schema", {"schema": {"type": "no-such-type"}})


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("The answer is 42.", 42.0),
        ("From 3 apples to 1,234.5 apples", 1234.5),
        ("It went down to -7", -7.0),
        ("pages 3-4", 4.0),
        ("about 1.5e3 m", 1500.0),
        ("costs $0.25", 0.25),
        ("no digits", None),
    ],
)
def test_extract_last_number(text: str, number: float | None) -> None:
    assert extract_last_number(text) == number


def test_numeric_tolerances() -> None:
    assert score("numeric", "So the total is 1,000.", "1000").value == 1.0
    assert score("numeric", "x = 3.14159", "3.14", tolerance=0.01).value == 1.0
    assert score("numeric", "x = 3.2", "3.14", tolerance=0.01).value == 0.0
    assert score("numeric", "about 1010", "1000", tolerance=0.02, relative=True).value == 1.0
    assert score("numeric", "about 1030", "1000", tolerance=0.02, relative=True).value == 0.0
    off = score("numeric", "I think 41", "42")
    assert off.reason == "got 41, expected 42"
    assert score("numeric", "no idea", "42").reason == "no number in output"
    assert score("numeric", "42", "forty-two").error.startswith("reference is not a number")


def test_json_match_compares_values_not_layout() -> None:
    reference = '{"name": "Ada", "age": 36}'
    assert score("json_match", '```json\n{\n  "age": 36,\n  "name": "Ada"\n}\n```', reference).value == 1.0
    wrong = score("json_match", '{"name": "Ada", "age": "36"}', reference)
    assert wrong.value == 0.0 and "differs from the reference" in wrong.reason
    assert "not valid JSON" in score("json_match", "Ada, 36", reference).reason
