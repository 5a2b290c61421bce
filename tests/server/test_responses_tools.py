"""Function tools on `/v1/responses` with the official openai client: `function_call` output items whose arguments
validate, the call and its `function_call_output` sent back as input, streamed call events as OpenAI sends them,
and bad tools a 400 naming the field."""

import json

import httpx
import jsonschema
import openai
import pytest

from tests.conftest import TEST_MODEL

pytestmark = pytest.mark.slow
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base}/v1", api_key="anything")


def test_a_required_tool_is_a_function_call_item_then_its_result_is_used(client, server):
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.responses.create(
        model=TEST_MODEL, input=ask, tools=[WEATHER], tool_choice="required", temperature=0, max_output_tokens=60,
        parallel_tool_calls=False,
    )  # fmt: skip
    calls = [item for item in first.output if item.type == "function_call"]
    assert calls and first.status == "completed"
    call = calls[0]
    assert call.name == "get_weather" and call.call_id.startswith("call_") and call.status == "completed"
    jsonschema.validate(json.loads(call.arguments), WEATHER["parameters"])
    assert first.tools[0].name == "get_weather"
    # the caller runs the tool and sends the call and its output back, as the SDK's items
    result = {"type": "function_call_output", "call_id": call.call_id, "output": "18 degrees and sunny"}
    second = client.responses.create(
        model=TEST_MODEL,
        input=[*ask, *[item.model_dump(exclude_none=True) for item in first.output], result],
        tools=[WEATHER],
        tool_choice="none",
        temperature=0,
        max_output_tokens=40,
    )
    assert second.output_text and all(item.type == "message" for item in second.output)
    recent = httpx.get(f"{server.base}/api/traces", params={"limit": 5}, timeout=30).json()["data"]
    [trace] = [t for t in recent if t["id"] == second.id]
    sent = trace["request"]["input"]
    assert sent[-1] == result and any(i.get("type") == "function_call" for i in sent)


def test_streamed_calls_send_output_item_and_argument_events(client):
    kinds, deltas = [], ""
    with client.responses.stream(
        model=TEST_MODEL,
        input="What is the weather in Rome?",
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        parallel_tool_calls=False,
        temperature=0,
        max_output_tokens=60,
    ) as stream:
        for event in stream:
            kinds.append(event.type)
            if event.type == "response.function_call_arguments.delta":
                deltas += event.delta
            if event.type == "response.function_call_arguments.done":
                done_arguments = event.arguments
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    i = kinds.index("response.output_item.added")
    assert kinds[i : i + 4] == [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
    ]
    [call] = [item for item in final.output if item.type == "function_call"]
    assert call.arguments == deltas == done_arguments
    jsonschema.validate(json.loads(call.arguments), WEATHER["parameters"])


def test_calls_cut_at_max_output_tokens_are_an_incomplete_response(client):
    """Parallel calls allowed, SmolLM2 at temperature 0 repeats its call until the tokens run out: the whole call
    is an output item, and the response is incomplete (max_output_tokens), so an agent knows one may be missing."""
    r = client.responses.create(
        model=TEST_MODEL, input="What is the weather in Paris?", tools=[WEATHER], tool_choice="required",
        temperature=0, max_output_tokens=40,
    )  # fmt: skip
    assert r.usage.output_tokens == 40 and r.status == "incomplete"
    assert r.incomplete_details.reason == "max_output_tokens"
    assert [item.type for item in r.output] == ["function_call"]


def test_auto_may_answer_in_text(client):
    r = client.responses.create(
        model=TEST_MODEL, input="Say hello.", tools=[WEATHER], tool_choice="auto", temperature=0, max_output_tokens=30
    )
    assert r.output and all(item.type in ("message", "function_call") for item in r.output)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools.0"),
        ({"tools": [{"type": "function", "name": "bad name!"}]}, "tools.0.name"),
        ({"tools": [WEATHER | {"parameters": {"type": "object", "properties": 3}}]}, "tools.0.parameters"),
        ({"tools": [WEATHER], "tool_choice": {"type": "file_search"}}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "name": "other"}}, "tool_choice"),
        ({"input": [{"type": "function_call_output", "call_id": "call_1", "output": "x"}]}, "messages.0.tool_call_id"),
        ({"input": [{"type": "function_call", "name": "get_weather", "arguments": "{}"}]}, "input.0.call_id"),
    ],
)
def test_bad_tools_and_items_name_the_field(server, body, param):
    r = httpx.post(f"{server.base}/v1/responses", json={"model": TEST_MODEL, "input": "hi"} | body, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param
