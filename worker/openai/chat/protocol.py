"""Our OpenAI chat-completions request models (the responses are in `worker.openai.chat.response`).

Unknown fields are ignored; known fields are validated strictly (no "1" -> 1
coercion), so a wrong type fails with an error whose `loc` names the field.
Cross-field business rules live in `validate_request`, which raises
`InvalidRequest` with `param` set.

Unknown fields are ignored (clients send vendor fields); OpenAI itself rejects them.
Fields a client may send that gpt-oss cannot honour are accepted by the models and
refused by name in `validate_request`: image/audio/file content parts, the legacy
`functions`/`function_call`, `role: "function"` messages.

`reasoning_effort`: gpt-oss knows low/medium/high; the newer OpenAI values map to the
nearest level: "none" and "minimal" mean "low", "xhigh" and "max" mean "high".
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
)

from worker.openai.chat.refusals import check_logit_bias, refuse_unsupported
from worker.openai.errors import InvalidRequest

FUNCTION_NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"


class _Req(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, populate_by_name=True)


# ------------------------------------------------------------------ request parts


class TextPart(_Req):
    type: Literal["text"]
    text: str


class RefusalPart(_Req):
    type: Literal["refusal"]
    refusal: str


class UnsupportedPart(_Req):
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


class SystemMessage(_Req):
    role: Literal["system"]
    content: Content
    name: str | None = None


class DeveloperMessage(_Req):
    role: Literal["developer"]
    content: Content
    name: str | None = None


class UserMessage(_Req):
    role: Literal["user"]
    content: Content
    name: str | None = None


class FunctionCall(_Req):
    name: str
    arguments: str

    @field_validator("arguments", mode="before")
    @classmethod
    def _json_arguments(cls, v: Any) -> Any:
        # Some clients send the arguments as an object instead of a JSON string.
        return json.dumps(v, ensure_ascii=False) if isinstance(v, dict) else v


class ToolCall(_Req):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class AssistantMessage(_Req):
    role: Literal["assistant"]
    content: AssistantContent | None = None
    tool_calls: list[ToolCall] | None = None
    function_call: dict[str, Any] | None = None  # legacy: refused, `tool_calls` replaced it
    reasoning: str | None = None
    reasoning_content: str | None = None
    name: str | None = None


class ToolMessage(_Req):
    role: Literal["tool"]
    content: Content
    tool_call_id: str
    name: str | None = None


class FunctionMessage(_Req):
    """Legacy `role: "function"` result: refused by `validate_request` (send a tool message)."""

    role: Literal["function"]


ChatMessage = Annotated[
    SystemMessage | DeveloperMessage | UserMessage | AssistantMessage | ToolMessage
    | FunctionMessage,
    Field(discriminator="role"),
]


class FunctionDefinition(_Req):
    name: Annotated[str, Field(pattern=FUNCTION_NAME_PATTERN)]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Req):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class ToolChoiceFunction(_Req):
    name: str


class NamedToolChoice(_Req):
    type: Literal["function"] = "function"
    function: ToolChoiceFunction


class AllowedTools(_Req):
    mode: Literal["auto", "required"]
    tools: list[NamedToolChoice]


class AllowedToolsChoice(_Req):
    """`{"type": "allowed_tools", ...}`: only these tools are offered, `mode` as tool_choice."""

    type: Literal["allowed_tools"]
    allowed_tools: AllowedTools


ToolChoice = NamedToolChoice | AllowedToolsChoice


class JsonSchemaSpec(_Req):
    name: str
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None
    description: str | None = None


class TextFormat(_Req):
    type: Literal["text"]


class JsonObjectFormat(_Req):
    type: Literal["json_object"]


class JsonSchemaFormat(_Req):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[
    TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")
]


class StreamOptions(_Req):
    include_usage: bool | None = None


Effort = Literal["low", "medium", "high"]
# The newer OpenAI reasoning_effort values -> the nearest gpt-oss level.
EFFORT_ALIASES = {"none": "low", "minimal": "low", "xhigh": "high", "max": "high"}


class ChatCompletionRequest(_Req):
    model: str | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: Annotated[int, Field(ge=1)] | None = 1
    seed: int | None = None
    stop: str | list[str] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=-1)] | None = None
    min_p: Annotated[float, Field(ge=0, le=1)] | None = None
    repetition_penalty: Annotated[float, Field(gt=0, le=2)] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    logprobs: bool | None = False
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    reasoning_effort: Effort | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    # Legacy function calling: refused by name (send `tools` / `tool_choice`).
    functions: list[Any] | None = None
    function_call: Any | None = None
    # Output gpt-oss cannot produce: refused by name.
    audio: Any | None = None
    modalities: list[str] | None = None
    web_search_options: Any | None = None

    @field_validator("reasoning_effort", mode="before")
    @classmethod
    def _nearest_effort(cls, v: Any) -> Any:
        return EFFORT_ALIASES.get(v, v) if isinstance(v, str) else v

    def offered_tool_names(self) -> list[str]:
        """The functions the model may see: none for tool_choice "none", the allowed ones
        for `allowed_tools`, else all of `tools`."""
        choice = self.tool_choice
        names = [t.function.name for t in self.tools or []]
        if choice == "none":
            return []
        if isinstance(choice, AllowedToolsChoice):
            allowed = {t.function.name for t in choice.allowed_tools.tools}
            return [n for n in names if n in allowed]
        return names

    def must_call(self) -> tuple[str, ...]:
        """Names one of which the turn must call (empty: the model decides)."""
        choice = self.tool_choice
        if isinstance(choice, NamedToolChoice):
            return (choice.function.name,)
        if choice == "required" or (
            isinstance(choice, AllowedToolsChoice) and choice.allowed_tools.mode == "required"
        ):
            return tuple(self.offered_tool_names())
        return ()

    def effective_max_tokens(self, default: int | None = None) -> int | None:
        """max_completion_tokens (the current name) over max_tokens (deprecated), else default."""
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens
        if self.max_tokens is not None:
            return self.max_tokens
        return default

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


def validate_request(req: ChatCompletionRequest) -> None:
    """Rules pydantic cannot see; raises InvalidRequest naming the parameter."""
    names = [t.function.name for t in req.tools or []]
    dup = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if dup is not None:
        raise InvalidRequest(f"duplicate function name {dup!r} in tools", param="tools")
    refuse_unsupported(req)
    choice = req.tool_choice
    if isinstance(choice, AllowedToolsChoice):
        for j, t in enumerate(choice.allowed_tools.tools):
            if t.function.name not in names:
                raise InvalidRequest(
                    f"allowed_tools names function {t.function.name!r}, which is not in tools",
                    param=f"tool_choice.allowed_tools.tools[{j}]",
                )
        if choice.allowed_tools.mode == "required" and not choice.allowed_tools.tools:
            raise InvalidRequest('allowed_tools mode "required" needs at least one tool',
                                 param="tool_choice.allowed_tools.tools")
    elif isinstance(choice, NamedToolChoice):
        if choice.function.name not in names:
            raise InvalidRequest(
                f"tool_choice names function {choice.function.name!r}, which is not in tools",
                param="tool_choice",
            )
    elif choice == "required" and not names:
        raise InvalidRequest('tool_choice "required" needs at least one tool', param="tool_choice")
    check_logit_bias(req.logit_bias)
    if req.top_logprobs is not None and req.top_logprobs > 0 and not req.logprobs:
        raise InvalidRequest("top_logprobs requires logprobs to be true", param="top_logprobs")
    if req.stream_options is not None and not req.stream:
        raise InvalidRequest(
            "stream_options is only allowed when stream is true", param="stream_options"
        )
    call_ids: set[str] = set()
    for i, m in enumerate(req.messages):
        if isinstance(m, AssistantMessage):
            call_ids.update(c.id for c in m.tool_calls or [])
        elif isinstance(m, ToolMessage) and m.tool_call_id not in call_ids:
            raise InvalidRequest(
                f"tool_call_id {m.tool_call_id!r} matches no earlier assistant tool call",
                param=f"messages[{i}].tool_call_id",
            )

