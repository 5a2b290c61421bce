"""Agent frameworks unchanged against fmstack: LangChain's `bind_tools` and a LangGraph ReAct agent that calls a
tool and answers from its result, on Qwen2.5 (whose own chat template renders the tools)."""

import pytest

pytest.importorskip("langchain_openai")
pytest.importorskip("langgraph")

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage  # noqa: E402
from langchain_core.tools import tool  # noqa: E402
from langchain_openai import ChatOpenAI  # noqa: E402
from langgraph.prebuilt import create_react_agent  # noqa: E402

pytestmark = pytest.mark.slow
QWEN = "qwen2.5-0.5b-instruct"


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


@pytest.fixture(scope="module")
def llm(server) -> ChatOpenAI:
    return ChatOpenAI(base_url=f"{server.base}/v1", api_key="anything", model=QWEN, temperature=0, max_tokens=120)


def test_bind_tools_returns_a_valid_call(llm):
    reply = llm.bind_tools([multiply], tool_choice="required").invoke("What is 12 times 34?")
    [call] = reply.tool_calls
    assert call["name"] == "multiply" and set(call["args"]) == {"a", "b"}
    assert all(isinstance(v, int) for v in call["args"].values())


def test_a_two_step_loop_uses_the_tools_result(llm):
    messages = [HumanMessage("Use the multiply tool: what is 12 times 34?")]
    call_reply = llm.bind_tools([multiply], tool_choice="required").invoke(messages)
    [call] = call_reply.tool_calls
    result = ToolMessage(str(multiply.invoke(call["args"])), tool_call_id=call["id"])
    answer = llm.bind_tools([multiply], tool_choice="none").invoke([*messages, call_reply, result])
    assert result.content == "408" and "408" in answer.content


def test_a_langgraph_agent_runs_its_tool_loop_against_fmstack(llm):
    """LangGraph's prebuilt agent drives the loop itself (auto tool choice): the tool is called with valid
    arguments and its result goes back to the model. What a 0.5B model says afterwards is its own business."""
    agent = create_react_agent(llm, [multiply])
    result = agent.invoke(
        {"messages": [("user", "Use the multiply tool: what is 12 times 34?")]}, {"recursion_limit": 8}
    )
    results = [m for m in result["messages"] if isinstance(m, ToolMessage)]
    assert results and all(m.content == "408" for m in results)
    assert isinstance(result["messages"][-1], AIMessage)
