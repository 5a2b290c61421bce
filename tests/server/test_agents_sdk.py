"""The OpenAI Agents SDK (`openai-agents`) unchanged against fmstack, on Qwen2.5: a two-step tool agent (call the
tool, answer from its result) over the Responses API, the SDK's default, and over chat completions; and the SDK's
own auto loop, whose tool calls and results round-trip as `function_call` / `function_call_output` items."""

import dataclasses

import pytest

pytest.importorskip("agents")

from agents import (  # noqa: E402
    Agent,
    AgentHooks,
    ModelSettings,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from agents.exceptions import MaxTurnsExceeded  # noqa: E402
from agents.items import ToolCallOutputItem  # noqa: E402
from openai import AsyncOpenAI  # noqa: E402

pytestmark = pytest.mark.slow
QWEN = "qwen2.5-0.5b-instruct"
INSTRUCTIONS = "Use the multiply tool for arithmetic, then answer with the number."
set_tracing_disabled(True)  # the SDK would send its traces to OpenAI


@function_tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


class AnswerAfterTheTool(AgentHooks):
    """Step two: once the tool has answered, the model answers in text (a 0.5B model would call it again)."""

    async def on_tool_end(self, context, agent, tool, result):
        agent.model_settings = dataclasses.replace(agent.model_settings, tool_choice="none")


@pytest.mark.parametrize("api", [OpenAIResponsesModel, OpenAIChatCompletionsModel])
def test_a_two_step_agent_calls_the_tool_and_answers_from_its_result(server, api):
    client = AsyncOpenAI(base_url=f"{server.base}/v1", api_key="anything")
    agent = Agent(
        name="calculator",
        instructions=INSTRUCTIONS,
        tools=[multiply],
        model=api(QWEN, client),
        model_settings=ModelSettings(tool_choice="required", temperature=0, max_tokens=120),
        reset_tool_choice=False,
        hooks=AnswerAfterTheTool(),
    )
    result = Runner.run_sync(agent, "What is 12 times 34?", max_turns=4)
    outputs = [item.output for item in result.new_items if isinstance(item, ToolCallOutputItem)]
    assert outputs == [408] and "408" in result.final_output


def test_the_sdks_own_loop_round_trips_tool_calls(server):
    """Auto tool choice, the SDK driving: every call has valid arguments and its result goes back to the model."""
    client = AsyncOpenAI(base_url=f"{server.base}/v1", api_key="anything")
    agent = Agent(
        name="calculator",
        instructions=INSTRUCTIONS,
        tools=[multiply],
        model=OpenAIResponsesModel(QWEN, client),
        model_settings=ModelSettings(temperature=0, max_tokens=120),
    )
    try:
        items = Runner.run_sync(agent, "What is 12 times 34?", max_turns=3).new_items
    except MaxTurnsExceeded as exc:  # the model may call the tool again each turn
        items = exc.run_data.new_items if exc.run_data else []
    outputs = [item.output for item in items if isinstance(item, ToolCallOutputItem)]
    assert outputs and all(o == 408 for o in outputs)
