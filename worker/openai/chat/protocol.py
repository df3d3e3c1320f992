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

from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    field_validator,
)

from worker.openai.bounds import Seed, TopK, parse_body
from worker.openai.chat.messages import (
    FUNCTION_NAME_PATTERN,
    AssistantMessage,
    ChatMessage,
    RequestModel,
    ToolMessage,
)
from worker.openai.chat.refusals import check_logit_bias, refuse_unsupported
from worker.openai.errors import InvalidRequest


class FunctionDefinition(RequestModel):
    name: Annotated[str, Field(pattern=FUNCTION_NAME_PATTERN)]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(RequestModel):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class ToolChoiceFunction(RequestModel):
    name: str


class NamedToolChoice(RequestModel):
    type: Literal["function"] = "function"
    function: ToolChoiceFunction


class AllowedTools(RequestModel):
    mode: Literal["auto", "required"]
    tools: list[NamedToolChoice]


class AllowedToolsChoice(RequestModel):
    """`{"type": "allowed_tools", ...}`: only these tools are offered, `mode` as tool_choice."""

    type: Literal["allowed_tools"]
    allowed_tools: AllowedTools


ToolChoice = NamedToolChoice | AllowedToolsChoice


class JsonSchemaSpec(RequestModel):
    name: str
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None
    description: str | None = None


class TextFormat(RequestModel):
    type: Literal["text"]


class JsonObjectFormat(RequestModel):
    type: Literal["json_object"]


class JsonSchemaFormat(RequestModel):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[
    TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")
]


class StreamOptions(RequestModel):
    include_usage: bool | None = None


Effort = Literal["low", "medium", "high"]
# The newer OpenAI reasoning_effort values -> the nearest gpt-oss level.
EFFORT_ALIASES = {"none": "low", "minimal": "low", "xhigh": "high", "max": "high"}


class ChatCompletionRequest(RequestModel):
    model: str | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: Annotated[int, Field(ge=1)] | None = 1
    seed: Seed | None = None
    stop: str | list[str] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    top_k: TopK | None = None
    min_p: Annotated[float, Field(ge=0, le=1)] | None = None
    repetition_penalty: Annotated[float, Field(gt=0, le=2)] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    # vLLM's extension: no stop (end of message, tool call) before this many tokens.
    min_tokens: Annotated[int, Field(ge=0)] | None = None
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


def parse_chat_request(body: Any) -> ChatCompletionRequest:
    """A chat body as a typed request; every error (a wrong type, a value out of bounds, a
    lone surrogate or a repeated key anywhere) is an InvalidRequest naming its field."""
    return parse_body(ChatCompletionRequest, body)


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
    asked = req.effective_max_tokens()
    if req.min_tokens and asked is not None and req.min_tokens > asked:
        which = "max_completion_tokens" if req.max_completion_tokens else "max_tokens"
        raise InvalidRequest(f"min_tokens={req.min_tokens} is above {which}={asked}",
                             param="min_tokens")
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

