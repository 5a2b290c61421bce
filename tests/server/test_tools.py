"""Tool calling as OpenAI clients use it: every call parses and validates against its tool's schema (grammar),
streaming deltas add up to the same calls, and bad tool input is a 400 naming the field."""

import json

import httpx
import jsonschema
import openai
import pytest

from tests.conftest import TEST_MODEL

pytestmark = pytest.mark.slow
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]},
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base}/v1", api_key="anything")


def valid_calls(message, tools=(WEATHER, TIME)) -> list[tuple[str, dict]]:
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    out = []
    for call in message.tool_calls:
        arguments = json.loads(call.function.arguments)
        jsonschema.validate(arguments, schemas[call.function.name])
        assert call.id.startswith("call_") and call.type == "function"
        out.append((call.function.name, arguments))
    return out


def test_required_always_gives_calls_that_validate(client):
    for seed in range(3):
        r = client.chat.completions.create(
            model=TEST_MODEL,
            messages=ASK,
            tools=[WEATHER, TIME],
            tool_choice="required",
            parallel_tool_calls=seed == 0,  # one call, or as many as the model writes
            seed=seed,
            max_tokens=60,
        )
        choice = r.choices[0]
        cut = r.usage.completion_tokens == 60  # parallel calls may run to max_tokens: OpenAI says "length" then
        assert choice.finish_reason == ("length" if cut else "tool_calls") and choice.message.content is None
        assert valid_calls(choice.message)


def test_calls_cut_at_max_tokens_finish_with_length(client):
    """At temperature 0 with parallel calls allowed SmolLM2 repeats its call until the tokens run out: the whole
    calls are returned, and finish_reason is "length" as OpenAI's (not "tool_calls"), so an agent knows the list
    may be missing one, whether it reads the whole answer or the stream."""
    kwargs = dict(model=TEST_MODEL, messages=ASK, tools=[WEATHER, TIME], tool_choice="required", temperature=0)
    whole = client.chat.completions.create(max_tokens=40, **kwargs)
    assert whole.usage.completion_tokens == 40 and whole.choices[0].finish_reason == "length"
    assert valid_calls(whole.choices[0].message)  # the call written before the cut
    reasons = [c.finish_reason for chunk in client.chat.completions.create(max_tokens=40, stream=True, **kwargs)
               for c in chunk.choices if c.finish_reason]  # fmt: skip
    assert reasons == ["length"]


def test_a_named_function_is_the_one_called(client):
    r = client.chat.completions.create(
        model=TEST_MODEL,
        messages=ASK,
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        temperature=0,
        max_tokens=60,
    )
    assert [name for name, _ in valid_calls(r.choices[0].message)] == ["get_time"]


def test_none_and_auto(client):
    none = client.chat.completions.create(
        model=TEST_MODEL, messages=ASK, tools=[WEATHER], tool_choice="none", temperature=0, max_tokens=20
    )
    assert none.choices[0].message.tool_calls is None and none.choices[0].message.content
    auto = client.chat.completions.create(model=TEST_MODEL, messages=ASK, tools=[WEATHER], temperature=0, max_tokens=80)
    message = auto.choices[0].message
    if message.tool_calls:  # the model decides; whatever it says is either text or a valid call
        assert valid_calls(message, [WEATHER]) and auto.choices[0].finish_reason == "tool_calls"
    else:
        assert message.content and "<tool_call>" not in message.content


def test_streamed_tool_call_deltas_add_up_to_the_whole_call(client):
    kwargs = dict(
        model=TEST_MODEL, messages=ASK, tools=[WEATHER], tool_choice="required", temperature=0, max_tokens=60
    ) | {"parallel_tool_calls": False}
    whole = client.chat.completions.create(**kwargs)
    calls: dict[int, dict] = {}
    reason = None
    for chunk in client.chat.completions.create(stream=True, **kwargs):
        for choice in chunk.choices:
            assert not choice.delta.content  # nothing of the call leaks as text
            for call in choice.delta.tool_calls or []:
                entry = calls.setdefault(call.index, {"name": "", "arguments": ""})
                entry["name"] += call.function.name or ""
                entry["arguments"] += call.function.arguments or ""
            reason = choice.finish_reason or reason
    assert reason == "tool_calls"
    expected = [(c.function.name, json.loads(c.function.arguments)) for c in whole.choices[0].message.tool_calls]
    assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == expected


def test_a_two_step_agent_calls_the_tool_then_answers_from_its_result(client, server):
    messages = [{"role": "user", "content": "Use the tool: what is the weather in Paris, in celsius?"}]
    first = client.chat.completions.create(
        model=TEST_MODEL,
        messages=messages,
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        temperature=0,
        max_tokens=60,
    )
    [call] = first.choices[0].message.tool_calls
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21, "sky": "sunny"})},
    ]
    second = client.chat.completions.create(
        model=TEST_MODEL, messages=messages, tools=[WEATHER], tool_choice="none", temperature=0, max_tokens=40
    )
    assert second.choices[0].finish_reason in ("stop", "length") and second.choices[0].message.content
    trace = httpx.get(f"{server.base}/api/traces/{second.id}", timeout=30).json()
    sent = trace["request"]["messages"]
    assert sent[1]["tool_calls"][0]["id"] == call.id and sent[2]["role"] == "tool"  # the tool turn is traced


@pytest.mark.parametrize(
    ("change", "param"),
    [
        (
            {"tools": [{"type": "function", "function": {"name": "x", "parameters": {"type": "nope"}}}]},
            "tools.0.function.parameters",
        ),
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools.0.function.name"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "missing"}}}, "tool_choice"),
        ({"messages": [*ASK, {"role": "tool", "tool_call_id": "call_x", "content": "{}"}]}, "messages.1.tool_call_id"),
        ({"tools": [WEATHER], "response_format": {"type": "json_object"}}, "response_format"),
    ],
    ids=["bad-schema", "bad-name", "unknown-choice", "orphan-result", "tools-and-json"],
)
def test_bad_tool_input_is_a_400_naming_the_field(server, change, param):
    body = {"model": TEST_MODEL, "messages": ASK, "max_tokens": 5} | change
    r = httpx.post(f"{server.base}/v1/chat/completions", json=body, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
