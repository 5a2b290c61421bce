"""The one traced path: every in-process caller's generation is exactly one trace row with its context."""

import asyncio
import subprocess
import sys
import textwrap

import pytest
from sqlalchemy import select

from fmstack.app.eval.generate import LocalGenerator
from fmstack.app.eval.runner import Runner, RunOptions
from fmstack.app.eval.suite import load_suite
from fmstack.core.errors import InvalidRequest, ModelNotFound
from fmstack.core.store.schema import Trace
from fmstack.gateway import CallContext, Gateway, generation_request
from tests.conftest import TEST_MODEL

pytestmark = pytest.mark.slow
HI = [{"role": "user", "content": "Say hi."}]


def traces(gateway: Gateway) -> list[Trace]:
    gateway.writer.flush()
    with gateway.sessions() as s:
        return list(s.scalars(select(Trace).order_by(Trace.created_at)))


def test_complete_is_one_trace_with_its_context_usage_and_cost(home):
    gateway = Gateway.open()
    try:
        context = CallContext(app="shop", user="u1", route="shop-bot", variant="b", key_name="k", eval_run_id="r")
        answer = gateway.complete_sync("smollm2-priced", generation_request(HI, {"max_tokens": 5, "seed": 1}), context)
        [row] = traces(gateway)
    finally:
        gateway.close()
    assert row.id == answer.trace_id and row.response_text == answer.text and row.status == "ok"
    assert (row.app, row.user, row.route, row.variant, row.key_name, row.eval_run_id) == ("shop", "u1", "shop-bot",
                                                                                         "b", "k", "r")
    assert (row.prompt_tokens, row.completion_tokens) == (answer.prompt_tokens, answer.completion_tokens)
    assert answer.completion_tokens <= 5 and row.cost == pytest.approx(answer.cost) and row.cost > 0
    assert row.request["messages"] == HI and row.request["max_tokens"] == 5 and row.ttft_ms is not None


def test_failures_before_the_first_token_raise_and_are_traced_once(home):
    gateway = Gateway.open()
    try:
        with pytest.raises(ModelNotFound):
            gateway.complete_sync("no-such-model", generation_request(HI, {}))
        with pytest.raises(InvalidRequest, match="max_tokens"):
            gateway.complete_sync(TEST_MODEL, generation_request(HI, {"max_tokens": 10**6}))
        rows = traces(gateway)
    finally:
        gateway.close()
    assert [(r.status, r.status_code) for r in rows] == [("error", 404), ("error", 400)]


def test_unknown_generation_parameters_name_the_parameter():
    with pytest.raises(InvalidRequest, match="Unknown parameter.*temprature") as err:
        generation_request(HI, {"temprature": 0})
    assert err.value.param == "temprature"


def test_a_reader_that_stops_cancels_the_generation_and_the_trace_says_so(home):
    gateway = Gateway.open()

    async def read_one() -> str:
        call = gateway.call("chat.completions", "chatcmpl", {"model": TEST_MODEL})
        deltas = await gateway.stream(call, TEST_MODEL, generation_request(HI, {"max_tokens": 200}))
        first = await anext(deltas)
        await deltas.aclose()
        return first.text

    try:
        asyncio.run(read_one())
        [row] = traces(gateway)
    finally:
        gateway.close()
    assert row.status == "cancelled" and row.completion_tokens < 200


def test_eval_generations_and_judge_calls_are_traces_of_the_run(home, tmp_path):
    suite_path = tmp_path / "s.yaml"
    suite_path.write_text(
        textwrap.dedent(
            """
            name: tiny
            prompt: "What is the capital of {{ country }}?"
            params: {max_tokens: 8, temperature: 0}
            metrics: [contains]
            cases:
              - {id: a, vars: {country: France}, reference: Paris}
              - {id: b, vars: {country: Japan}, reference: Tokyo}
            """
        )
    )
    gateway = Gateway.open()
    try:
        data = asyncio.run(Runner(gateway.sessions, LocalGenerator(gateway)).run(load_suite(suite_path),
                                                                                 RunOptions([TEST_MODEL])))
        rows = traces(gateway)
    finally:
        gateway.close()
    assert {r.eval_run_id for r in rows} == {data.id} and len(rows) == 2
    assert {r.response_text for r in rows} == {r.output for r in data.rows}
    assert all(r.endpoint == "eval.generate" and r.app == "fmstack-eval" for r in rows)


@pytest.mark.parametrize("ending", ["/quit\n", ""], ids=["quit", "end-of-input"])
def test_terminal_chat_commits_its_last_trace_before_exiting(home, ending):
    """The chat runs in-process (no embedded HTTP server) and waits for the trace writer when it ends."""
    result = subprocess.run(
        [sys.executable, "-m", "fmstack", "chat", "--model", TEST_MODEL, "--max-tokens", "24"],
        input="Hello!\nAnd again?\n" + ending,
        capture_output=True,
        text=True,
        timeout=300,
        env={"FMSTACK_HOME": str(home), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    gateway = Gateway.open()
    try:
        rows = traces(gateway)
    finally:
        gateway.close()
    assert [r.status for r in rows] == ["ok", "ok"] and all(r.app == "fmstack-chat" for r in rows)
    assert rows[1].request["messages"][-1]["content"] == "And again?" and rows[1].completion_tokens <= 24
