"""The chat-completions request's messages and content parts in pydantic (the request
itself is in `chat/protocol.py`). Unknown fields are ignored; known fields are validated
strictly. Parts and roles gpt-oss cannot take (images, audio, files, `role: "function"`)
are accepted here and refused by name in `protocol.validate_request`."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

FUNCTION_NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"


class RequestModel(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, populate_by_name=True)


# ------------------------------------------------------------------ request parts


class TextPart(RequestModel):
    type: Literal["text"]
    text: str


class RefusalPart(RequestModel):
    type: Literal["refusal"]
    refusal: str


class UnsupportedPart(RequestModel):
    """A content part gpt-oss cannot read (it is text-only): refused by `validate_request`."""

    type: Literal["image_url", "input_audio", "file", "input_image", "input_file", "image"]


Content = str | list[Annotated[TextPart | UnsupportedPart, Field(discriminator="type")]]
AssistantContent = str | list[Annotated[TextPart | RefusalPart, Field(discriminator="type")]]


def text_of(content: Any) -> str:
    """The text of a message's content; parts are joined by newlines."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(p.text if isinstance(p, TextPart) else p.refusal
                     for p in content if isinstance(p, TextPart | RefusalPart))


class SystemMessage(RequestModel):
    role: Literal["system"]
    content: Content
    name: str | None = None


class DeveloperMessage(RequestModel):
    role: Literal["developer"]
    content: Content
    name: str | None = None


class UserMessage(RequestModel):
    role: Literal["user"]
    content: Content
    name: str | None = None


def arguments_as_text(cls: Any, v: Any) -> Any:
    """Tool-call arguments as JSON text: some clients send an object instead of a string."""
    return json.dumps(v, ensure_ascii=False) if isinstance(v, dict) else v


class FunctionCall(RequestModel):
    name: str
    arguments: str

    _json_arguments = field_validator("arguments", mode="before")(arguments_as_text)


class ToolCall(RequestModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class AssistantMessage(RequestModel):
    role: Literal["assistant"]
    content: AssistantContent | None = None
    tool_calls: list[ToolCall] | None = None
    function_call: dict[str, Any] | None = None  # legacy: refused, `tool_calls` replaced it
    reasoning: str | None = None
    reasoning_content: str | None = None
    name: str | None = None


class ToolMessage(RequestModel):
    role: Literal["tool"]
    content: Content
    tool_call_id: str
    name: str | None = None


class FunctionMessage(RequestModel):
    """Legacy `role: "function"` result: refused by `validate_request` (send a tool message)."""

    role: Literal["function"]


ChatMessage = Annotated[
    SystemMessage | DeveloperMessage | UserMessage | AssistantMessage | ToolMessage
    | FunctionMessage,
    Field(discriminator="role"),
]
