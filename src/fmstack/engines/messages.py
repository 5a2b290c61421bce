"""Chat messages as OpenAI clients send them, and the plain {role, content} form chat templates take.

They live with the engines (not the server) because stored traces, training data and every caller speak them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from fmstack.core.errors import InvalidRequest


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def as_template_input(self) -> dict:
        """Plain {role, content} for chat templates: text parts joined, `developer` treated as `system`."""
        if isinstance(self.content, list):
            if any(p.type != "text" for p in self.content):
                raise InvalidRequest("Only text content parts are supported.", param="messages")
            content = "".join(p.text or "" for p in self.content)
        else:
            content = self.content or ""
        return {"role": "system" if self.role == "developer" else self.role, "content": content}
