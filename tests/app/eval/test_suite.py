"""Suites: cases from YAML, files and traces; every malformed suite names its file, line and field."""

import json
import textwrap

import pytest

from fmstack.app.eval.suite import SuiteError, load_suite


def write(tmp_path, text: str, name: str = "suite.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def test_cases_render_templates_and_merge_metrics(tmp_path):
    path = write(
        tmp_path,
        """
        name: capitals
        system: Answer with the city only.
        prompt: "What is the capital of {{ country }}?"
        metrics: [{name: contains, threshold: 1}, token_f1]
        cases:
          - {id: fr, vars: {country: France}, reference: Paris}
          - {input: "What is 2+2?", reference: 4, metrics: [{name: token_f1, threshold: 0.5}]}
    """,
    )
    suite = load_suite(path)
    (fr, fr_metrics), (two, two_metrics) = suite.cases
    assert fr.id == "fr" and two.id == "case-2"
    assert fr.messages == [
        {"role": "system", "content": "Answer with the city only."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    assert two.reference == "4"
    assert [m.name for m in fr_metrics] == ["contains", "token_f1"]
    assert [(m.name, m.threshold) for m in two_metrics] == [("contains", 1), ("token_f1", 0.5)]


def test_cases_from_jsonl_csv_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.jsonl").write_text(json.dumps({"input": "Hi", "reference": "Hello"}) + "\n")
    (tmp_path / "b.csv").write_text('input,reference,vars\n"Yo","Hey","{""x"": 1}"\n')
    pq.write_table(pa.table({"input": ["Q?"], "reference": ["A"]}), tmp_path / "c.parquet")
    path = write(
        tmp_path,
        """
        name: files
        metrics: [exact_match]
        include: [{file: a.jsonl}, {file: b.csv}, {file: c.parquet}]
    """,
    )
    cases = [c for c, _ in load_suite(path).cases]
    assert [(c.question, c.reference) for c in cases] == [("Hi", "Hello"), ("Yo", "Hey"), ("Q?", "A")]
    assert cases[1].vars == {"x": 1}


BROKEN = [
    ("name: x\ncases:\n  - input: hi\n    refrence: typo\n", r"suite.yaml:4: cases\[0\].refrence: unknown field"),
    ("name: x\nmetrics: [no_such_metric]\ncases: [{input: a}]\n", r"suite.yaml:2: metrics\[0\]: unknown metric"),
    (
        "name: x\nmetrics:\n  - name: regex\n    pattern: '(['\ncases: [{input: a}]\n",
        r"suite.yaml:4: metrics\[0\]\.pattern: .*regex",
    ),
    ("name: x\ncases:\n  - {input: a}\n  - {input: b, messages: []}\n", r"suite.yaml:4: cases\[1\]: give 'input'"),
    ("name: x\ncases:\n  - {input: a\n", r"suite.yaml:\d+: not valid YAML"),
    ("cases: [{input: a}]\n", r"suite.yaml:1: name: required field is missing"),
    ("name: x\nprompt: 'Hi {{ who }}'\ncases:\n  - vars: {}\n", r"suite.yaml:4: cases\[0\].vars: 'who' is undefined"),
    ("name: x\ncases: []\n", r"suite.yaml: the suite has no cases"),
    ("name: x\ncases:\n  - {id: a, input: x}\n  - {id: a, input: y}\n", r"case id 'a' is used twice"),
    ("name: x\nmin_pass_rate: 2\ncases: [{input: a}]\n", r"suite.yaml:2: min_pass_rate: "),
]


@pytest.mark.parametrize(("text", "message"), BROKEN, ids=[m for _, m in BROKEN])
def test_broken_suites_name_file_line_and_field(tmp_path, text, message):
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    with pytest.raises(SuiteError, match=message):
        load_suite(path)


def test_broken_included_file_names_its_line(tmp_path):
    (tmp_path / "cases.jsonl").write_text('{"input": "ok"}\n{"input": \n')
    path = write(tmp_path, "name: x\ninclude: [{file: cases.jsonl}]\n")
    with pytest.raises(SuiteError, match=r"cases.jsonl:2: not valid JSON"):
        load_suite(path)
