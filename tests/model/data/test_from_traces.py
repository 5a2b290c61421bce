"""`fmstack data from-traces`: judged traces in a real store become the exact SFT and DPO records training reads."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from fmstack.cli import app
from fmstack.core.config import get_settings
from fmstack.core.errors import FmstackError
from fmstack.core.store import open_store
from fmstack.core.store.schema import Feedback
from fmstack.core.store.traces import TraceWriter, add_feedback
from fmstack.model.data.from_traces import export_traces
from fmstack.model.train.chat_data import load_preferences, load_sft

SYSTEM = {"role": "system", "content": "Answer briefly."}
MATH = [SYSTEM, {"role": "user", "content": "What is 2+2?"}]
CAPITAL = [{"role": "user", "content": [{"type": "text", "text": "Capital of "}, {"type": "text", "text": "France?"}]}]
CAPITAL_PLAIN = [{"role": "user", "content": "Capital of France?"}]
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def trace(trace_id: str, messages: list, answer: str, **extra) -> dict:
    row = dict(
        id=trace_id,
        created_at=NOW,
        endpoint="chat.completions",
        model="smollm2-135m-instruct",
        app="shop",
        request={"model": "smollm2-135m-instruct", "messages": messages, "temperature": 0.7},
        response_text=answer,
        status="ok",
        status_code=200,
    )
    return row | extra


# (trace, feedback given as (rating, correction)); comments alone carry no label
TRACES = [
    (trace("up", MATH, "4"), [(1, None)]),
    (trace("up-again", MATH, "4"), [(1, None)]),  # the same request liked twice: one record
    (trace("down", MATH, "5"), [(-1, None)]),
    (trace("fixed", CAPITAL, "Lyon"), [(-1, None), (None, "Paris"), (None, "Paris.")]),  # newest correction wins
    (trace("split", [{"role": "user", "content": "Tell a joke"}], "No."), [(1, None), (-1, None)]),  # net 0
    (trace("unrated", [{"role": "user", "content": "Hi"}], "Hello!"), []),
    (trace("commented", [{"role": "user", "content": "Hey"}], "Hello!"), [(None, None)]),
    (trace("rag", MATH, "4", endpoint="rag.chat.completions"), [(1, None)]),
    (trace("failed", MATH, None, status="error", status_code=502), [(1, None)]),
    (trace("other-app", [{"role": "user", "content": "Ping"}], "Pong", app="other"), [(1, None)]),
    (
        trace("old", [{"role": "user", "content": "Old?"}], "Yes", created_at=datetime(2020, 1, 1, tzinfo=UTC)),
        [(1, None)],
    ),
    (
        trace(
            "via-prompt",
            [{"role": "user", "content": "Capital of Peru?"}],
            "Lima",
            endpoint="prompts.chat.completions",
            prompt_name="capitals",
            prompt_version="2",
        ),
        [(1, None)],
    ),
]


@pytest.fixture()
def store(home: Path) -> Path:
    """The store filled through its own API: the trace writer, then feedback as the API adds it."""
    sessions = open_store(get_settings())
    writer = TraceWriter(sessions)
    for row, _ in TRACES:
        writer.write(row)
    writer.flush()
    writer.close()
    with sessions.begin() as session:
        for row, feedback in TRACES:
            for rating, correction in feedback:
                add_feedback(session, row["id"], rating, correction, "a comment" if rating is None else None)
    return home


def run(*args: str):
    return CliRunner().invoke(app, ["data", "from-traces", *args])


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def reply(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def test_sft_keeps_liked_and_corrected_answers(store, tmp_path):
    out = tmp_path / "sft.jsonl"
    result = run("--format", "sft", "--app", "shop", "--since", "2026-11-01", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert records(out) == [  # oldest first, then by id
        {"messages": [*CAPITAL_PLAIN, *reply("Paris.")]},
        {"messages": [*MATH, *reply("4")]},
        {"messages": [{"role": "user", "content": "Capital of Peru?"}, *reply("Lima")]},
    ]
    assert "approved" in result.output and "corrected" in result.output and "duplicate" in result.output
    assert [r.model_dump() for r in load_sft(out)] == records(out)  # what `train finetune` reads


def test_dpo_pairs_corrections_and_thumbs(store, tmp_path):
    out = tmp_path / "prefs.jsonl"
    result = run("--format", "dpo", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert records(out) == [
        {"prompt": CAPITAL_PLAIN, "chosen": reply("Paris."), "rejected": reply("Lyon")},
        {"prompt": MATH, "chosen": reply("4"), "rejected": reply("5")},
    ]
    assert [r.to_trl() for r in load_preferences(out)] == records(out)  # what `train dpo` reads


def test_filters_and_min_rating(store, tmp_path):
    out = tmp_path / "sft.jsonl"
    assert run("--format", "sft", "--app", "other", "--out", str(out)).exit_code == 0
    assert records(out) == [{"messages": [{"role": "user", "content": "Ping"}, *reply("Pong")]}]
    assert run("--format", "sft", "--out", str(out)).exit_code == 0
    assert len(records(out)) == 5  # no filters: the old trace and the other app's too
    # no answer has two net thumbs up: only the corrected one is left
    assert run("--format", "sft", "--min-rating", "2", "--out", str(out)).exit_code == 0
    assert [r["messages"][-1]["content"] for r in records(out)] == ["Paris."]


def test_a_loop_window_takes_an_answer_when_it_is_judged_not_when_it_was_made(store, tmp_path):
    """`fmstack loop run` reads feedback since the last loop: a thumb given today on an answer from 2020 counts, a
    thumb given before the window does not (that loop already trained on it)."""
    sessions = open_store(get_settings())
    start = datetime.now(UTC) - timedelta(minutes=5)
    with sessions.begin() as session:
        session.execute(update(Feedback).where(Feedback.trace_id == "up").values(created_at=start - timedelta(days=1)))
    out = tmp_path / "sft.jsonl"
    with pytest.raises(FmstackError, match="No sft records"):  # every trace was made before the window
        export_traces(sessions, "sft", out, app="shop", since=start)
    late = export_traces(sessions, "sft", out, app="shop", since=start, by_judgement=True)
    assert sorted(r["messages"][-1]["content"] for r in late.records) == ["4", "Lima", "Paris.", "Yes"]
    earlier = export_traces(sessions, "sft", out, app="shop", until=start, by_judgement=True)
    assert [r["messages"] for r in earlier.records] == [[*MATH, *reply("4")]]  # "up", judged the day before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--format", "csv"), "--format 'csv' is not supported"),
        (("--format", "sft", "--since", "last week"), "--since 'last week'"),
        (("--format", "sft", "--min-rating", "0"), "--min-rating 0"),
        (("--format", "dpo", "--model", "nobody"), "No dpo records: 0 judged chat trace(s)"),
    ],
)
def test_bad_requests_exit_2_and_write_nothing(store, tmp_path, args, message):
    out = tmp_path / "out.jsonl"
    result = run(*args, "--out", str(out))
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert not out.exists()


@pytest.mark.slow
def test_feedback_given_through_a_real_server_becomes_a_pair(server, tmp_path, monkeypatch):
    """The request as the server stores it (validated body, defaults and all), corrected through POST /v1/feedback."""
    import httpx

    question = [{"role": "user", "content": "What is the capital of France? One word."}]
    body = {"model": "smollm2-135m-instruct", "messages": question, "max_tokens": 8, "temperature": 0}
    response = httpx.post(
        f"{server.base}/v1/chat/completions", json=body, headers={"X-Fmstack-App": "from-traces"}, timeout=120
    ).json()
    answer = response["choices"][0]["message"]["content"]
    assert answer.strip() != "Paris, of course."
    feedback = {"trace_id": response["id"], "rating": -1, "correction": "Paris, of course."}
    assert httpx.post(f"{server.base}/v1/feedback", json=feedback, timeout=30).status_code == 200
    monkeypatch.setenv("FMSTACK_HOME", str(server.home))
    out = tmp_path / "prefs.jsonl"
    result = run("--format", "dpo", "--app", "from-traces", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert records(out) == [{"prompt": question, "chosen": reply("Paris, of course."), "rejected": reply(answer)}]


TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
ASKED = {"role": "user", "content": "Weather in Paris?"}
CALLED = {
    "role": "assistant",
    "content": "",
    "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    ],
}
RESULT = {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"}


def test_tool_conversations_are_kept_in_openai_message_form(home, tmp_path):
    """The call an answer made (parsed from the model's text) and the answer after a tool's result, each with the
    tools offered; a tool result for a call no message made is skipped."""
    tools_request = {"model": "qwen", "tools": [TOOL], "tool_choice": "auto"}
    rows = [
        trace(
            "calls",
            [ASKED],
            '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
            request=tools_request | {"messages": [ASKED]},
        ),
        trace(
            "answers",
            [ASKED, CALLED, RESULT],
            "It is 18 C and sunny in Paris.",
            request=tools_request | {"messages": [ASKED, CALLED, RESULT]},
        ),
        trace("orphan", [ASKED, RESULT], "Sunny.", request=tools_request | {"messages": [ASKED, RESULT]}),
    ]
    sessions = open_store(get_settings())
    writer = TraceWriter(sessions)
    for row in rows:
        writer.write(row)
    writer.close()
    with sessions.begin() as session:
        for row in rows:
            add_feedback(session, row["id"], 1, None, None)
    out = tmp_path / "sft.jsonl"
    result = run("--format", "sft", "--out", str(out))
    assert result.exit_code == 0, result.output
    by_last = {json.dumps(r["messages"][-2]["role"]): r for r in records(out)}
    called = by_last['"user"']
    [call] = called["messages"][-1]["tool_calls"]
    assert called["tools"] == [TOOL] and called["messages"][:-1] == [ASKED]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    answered = by_last['"tool"']
    assert answered == {"messages": [ASKED, CALLED, RESULT, *reply("It is 18 C and sunny in Paris.")], "tools": [TOOL]}
    assert len(records(out)) == 2 and "messages not plain text" in " ".join(result.output.split())
    # the same export again: the same call ids, so identical records
    assert run("--format", "sft", "--out", str(tmp_path / "again.jsonl")).exit_code == 0
    assert (tmp_path / "again.jsonl").read_text() == out.read_text()
