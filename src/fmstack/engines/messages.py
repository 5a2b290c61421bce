"""Chat messages as OpenAI clients send them, and the plain {role, content} form chat templates take.

They live with the engines (not the server) because stored traces, training data and every caller speak them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from fmstack.core.errors import InvalidRequest


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class FunctionCall(BaseModel):
    name: str
    arguments: str = Field(description="JSON object, as a string (OpenAI's format)")


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None  # an assistant's calls
    tool_call_id: str | None = None  # a tool result: the call it answers

    def as_template_input(self) -> dict:
        """{role, content} for chat templates (text parts joined, `developer` treated as `system`), with a
        message's tool calls or the call a tool result answers."""
        if isinstance(self.content, list):
            if any(p.type != "text" for p in self.content):
                raise InvalidRequest("Only text content parts are supported.", param="messages")
            content = "".join(p.text or "" for p in self.content)
        else:
            content = self.content or ""
        message = {"role": "system" if self.role == "developer" else self.role, "content": content}
        if self.tool_calls:
            message["tool_calls"] = [call.model_dump() for call in self.tool_calls]
        if self.role == "tool":
            message["tool_call_id"] = self.tool_call_id
        return message
