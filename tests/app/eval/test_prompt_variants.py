"""`eval run --prompt name@1 --prompt name@2`: stored prompt versions render each case's vars; results are grouped by
model × prompt version, reported and compared side by side. A scripted generator keeps it fast; one real run."""

import asyncio
import re
import textwrap

import pytest
from typer.testing import CliRunner

from fmstack import cli
from fmstack.app.eval.report import summarize
from fmstack.app.eval.runner import Runner, RunOptions, load_run
from fmstack.app.eval.suite import load_suite
from fmstack.app.prompts import PromptStore
from fmstack.cli import app
from fmstack.core.config import get_settings
from fmstack.core.errors import FmstackError
from fmstack.core.store import open_store
from tests.conftest import TEST_MODEL

ANSWERS = {"France": "Paris", "Japan": "Tokyo", "Peru": "Lima"}
runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setattr(cli.console, "width", 250)


class Scripted:
    """Answers the capital; in a sentence when asked to, which exact match fails."""

    def __init__(self):
        self.calls = []

    async def generate(self, model, messages, params, run_id=None):
        from fmstack.app.eval.generate import Generated

        self.calls.append((model, messages, params))
        text = messages[-1]["content"]
        answer = ANSWERS[next(c for c in ANSWERS if c in text)]
        return Generated(f"The capital is {answer}." if "sentence" in text else answer, 5.0, 12, 2, 0.0)


def suite_file(tmp_path, inline_prompt: bool = False):
    path = tmp_path / "s.yaml"
    prompt = 'prompt: "unused {{ c }}"\n' if inline_prompt else ""
    path.write_text(
        f"name: capitals\n{prompt}params: {{temperature: 0, max_tokens: 32}}\n"
        + textwrap.dedent("""\
        metrics: [{name: exact_match, threshold: 1}]
        min_pass_rate: 1
        cases:
          - {id: fr, vars: {c: France}, reference: Paris}
          - {id: jp, vars: {c: Japan}, reference: Tokyo}
          - {id: pe, input: "Peru", reference: Lima}
        """)
    )
    return path


@pytest.fixture()
def store(home):
    store = PromptStore.open()
    store.save("caps", {"system": "Be brief.", "user": "Capital of {{ c | default(input) }}?"})
    store.save("caps", {"user": "In a sentence, the capital of {{ c | default(input) }}?", "params": {"max_tokens": 4}})
    store.set_alias("caps", "production", 1)
    return store


def test_two_versions_render_the_cases_and_are_grouped_side_by_side(store, tmp_path):
    sessions = open_store(get_settings())
    suite = load_suite(suite_file(tmp_path), sessions, stored_prompts=True)
    generator = Scripted()
    versions = [store.get("caps@production"), store.get("caps@2")]
    options = RunOptions(["good", "other"], prompts=versions)
    data = asyncio.run(Runner(sessions, generator).run(suite, options))

    assert len(data.rows) == 2 * 2 * 3 and data.config["prompts"] == ["caps@1", "caps@2"]
    assert data.variants == ["good · caps@1", "good · caps@2", "other · caps@1", "other · caps@2"]
    by = {(r.variant, r.case_id): r for r in data.rows}
    assert by["good · caps@1", "fr"].input == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"},
    ]
    assert by["good · caps@2", "pe"].input == [
        {"role": "user", "content": "In a sentence, the capital of Peru?"}
    ]  # `input`
    assert by["good · caps@1", "jp"].scores["exact_match≥1"].passed is True
    assert by["good · caps@2", "jp"].scores["exact_match≥1"].passed is False
    params = {m[1][-1]["content"]: m[2] for m in generator.calls}
    assert (
        params["Capital of France?"]["max_tokens"] == 32
        and params["In a sentence, the capital of France?"]["max_tokens"] == 4
    )

    stored = load_run(sessions, data.id)  # stored and read back with the prompt on every row
    assert {r.prompt for r in stored.rows} == {"caps@1", "caps@2"}
    cells = summarize(stored)
    assert (
        cells[("good · caps@1", "exact_match≥1")].passed == 3 and cells[("good · caps@2", "exact_match≥1")].passed == 0
    )

    again = Scripted()  # each version's outputs are cached separately
    asyncio.run(Runner(sessions, again).run(suite, options))
    assert again.calls == []

    compared = runner.invoke(app, ["eval", "compare", data.id, "--a", "good · caps@1", "--b", "good · caps@2"])
    assert compared.exit_code == 0, compared.output
    assert "a = good · caps@1, b = good · caps@2" in compared.output and "pass→fail" in compared.output
    vague = runner.invoke(app, ["eval", "compare", data.id, "--a", "caps@1", "--b", "caps@2"])
    assert vague.exit_code == 2 and "matches several" in vague.output
    alone = runner.invoke(app, ["eval", "compare", data.id])
    assert alone.exit_code == 2 and "--a and --b" in alone.output


def test_a_variable_a_version_needs_is_an_error_before_anything_runs(store, tmp_path):
    store.save("needs-more", {"user": "{{ c }} and {{ region }}"})
    sessions = open_store(get_settings())
    suite = load_suite(suite_file(tmp_path), sessions, stored_prompts=True)
    generator = Scripted()
    with pytest.raises(FmstackError, match="case 'fr': Missing variable 'region' for prompt 'needs-more@1'"):
        asyncio.run(Runner(sessions, generator).run(suite, RunOptions(["good"], prompts=[store.get("needs-more")])))
    assert generator.calls == []


def test_suite_without_inline_prompt_needs_stored_prompts(store, tmp_path):
    from fmstack.app.eval.suite import SuiteError

    with pytest.raises(SuiteError, match="no 'prompt' template"):
        load_suite(suite_file(tmp_path))
    suite = load_suite(suite_file(tmp_path, inline_prompt=True), stored_prompts=True)
    assert [c.messages for c, _ in suite.cases][:2] == [None, None]  # the inline prompt is not rendered


def test_cli_refuses_an_unknown_prompt_version(store, tmp_path):
    result = runner.invoke(app, ["eval", "run", str(suite_file(tmp_path)), "-m", "x", "--prompt", "caps@7"])
    assert result.exit_code == 2 and "has no version 7" in result.output


@pytest.mark.slow
def test_eval_run_with_two_prompt_versions_of_a_real_model(store, tmp_path):
    result = runner.invoke(
        app,
        ["eval", "run", str(suite_file(tmp_path)), "-m", TEST_MODEL, "--prompt", "caps@v1", "--prompt", "caps@2"],
    )
    assert result.exit_code in (0, 1), result.output  # 1: a threshold failed, which a small model may do
    assert f"{TEST_MODEL} · caps@1" in result.output and f"{TEST_MODEL} · caps@2" in result.output
    run_id = re.search(r"run (run-[0-9a-f]{12})", result.output).group(1)
    data = load_run(open_store(get_settings()), run_id)
    assert len(data.rows) == 6 and {r.prompt for r in data.rows} == {"caps@1", "caps@2"}
    assert all(r.output is not None and r.error is None for r in data.rows)
    assert max(r.completion_tokens for r in data.rows if r.prompt == "caps@2") <= 4  # the version's max_tokens
    listed = runner.invoke(app, ["eval", "list"])
    assert "caps@1, caps@2" in listed.output


def test_production_calls_through_a_prompt_become_cases_for_its_next_version(store, tmp_path):
    """`include: [{traces: {prompt: caps@production}}]`: each traced call's variables, rendered by another version."""
    from fmstack.core.store.traces import TraceWriter
    from tests.core.test_store import row

    writer = TraceWriter(store.sessions)
    for i, (country, version) in enumerate([("France", "1"), ("Japan", "1"), ("Peru", "2")]):
        request = {"messages": [{"role": "user", "content": f"Capital of {country}?"}], "variables": {"c": country}}
        writer.write(row(i, request=request, prompt_name="caps", prompt_version=version))
    writer.flush()
    writer.close()
    path = tmp_path / "from-traces.yaml"
    path.write_text("name: replay\nmetrics: [token_f1]\ninclude:\n  - {traces: {prompt: caps@production}}\n")
    sessions = open_store(get_settings())
    suite = load_suite(path, sessions, stored_prompts=True)
    assert sorted(c.vars["c"] for c, _ in suite.cases) == ["France", "Japan"]  # v1's calls only
    generator = Scripted()
    data = asyncio.run(Runner(sessions, generator).run(suite, RunOptions(["good"], prompts=[store.get("caps@2")])))
    assert sorted(r.input[-1]["content"] for r in data.rows) == [
        "In a sentence, the capital of France?",
        "In a sentence, the capital of Japan?",
    ]
