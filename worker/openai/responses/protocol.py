"""Our OpenAI Responses request subset in pydantic (`POST /v1/responses`).

Top-level fields are explicit: supported ones are typed and validated
strictly; the ones clients send by default that mean nothing here (prompt
caching keys, service tier, Codex's client metadata, ...) are accepted and
ignored (`IGNORED_FIELDS`, listed in docs/RESPONSES.md); any other field is a
400 naming it. Inside input items unknown keys are ignored, because clients
replay our own output items verbatim (ids, statuses, annotations).

`worker.openai.responses.validate` holds the rules pydantic cannot see; they raise
`InvalidRequest` with `param` set.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from worker.openai.chat.messages import arguments_as_text
from worker.openai.errors import InvalidRequest

FUNCTION_NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"
ENCRYPTED_REASONING = "reasoning.encrypted_content"

# Hosted tool types clients send by default (Codex: web_search, namespace); gpt-oss
# cannot run them here, so they are not offered to the model.
IGNORED_TOOL_TYPES = frozenset({"web_search", "web_search_preview", "namespace"})


class _Item(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, populate_by_name=True)


# ------------------------------------------------------------------------- input


class InputText(_Item):
    type: Literal["input_text", "output_text"]
    text: str


class Refusal(_Item):
    type: Literal["refusal"]
    refusal: str


class UnsupportedPart(_Item):
    """Image, file and audio parts: refused by `validate_request` (gpt-oss is text-only)."""

    type: Literal["input_image", "input_file", "input_audio"]


MessagePart = Annotated[InputText | Refusal | UnsupportedPart, Field(discriminator="type")]


class Message(_Item):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[MessagePart]
    phase: Literal["commentary", "final_answer"] | None = None  # assistant text: a preamble?

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text if isinstance(p, InputText) else getattr(p, "refusal", "")
                         for p in self.content)


class FunctionCallItem(_Item):
    type: Literal["function_call"]
    call_id: Annotated[str, Field(min_length=1)]
    name: Annotated[str, Field(pattern=FUNCTION_NAME_PATTERN)]
    arguments: str

    _json_arguments = field_validator("arguments", mode="before")(arguments_as_text)


class FunctionCallOutput(_Item):
    type: Literal["function_call_output"]
    call_id: Annotated[str, Field(min_length=1)]
    output: str | list[InputText]

    def text(self) -> str:
        if isinstance(self.output, str):
            return self.output
        return "\n".join(p.text for p in self.output)


class ReasoningText(_Item):
    type: Literal["reasoning_text"]
    text: str


class SummaryText(_Item):
    type: Literal["summary_text"]
    text: str


class ReasoningItem(_Item):
    type: Literal["reasoning"]
    summary: list[SummaryText] = []
    content: list[ReasoningText] | None = None
    encrypted_content: str | None = None

    def text(self) -> str:
        """The reasoning text: its content, else what we put in encrypted_content, else
        the summary."""
        if self.content:
            return "".join(p.text for p in self.content)
        if self.encrypted_content:
            return self.encrypted_content
        return "\n".join(p.text for p in self.summary)


ITEM_TYPES = ("message", "function_call", "function_call_output", "reasoning")


def _item_type(v: Any) -> str | None:
    if isinstance(v, dict):
        return v.get("type", "message" if "role" in v else None)  # {role, content}: a message
    return getattr(v, "type", None)


InputItem = Annotated[
    Annotated[Message, Tag("message")] | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutput, Tag("function_call_output")]
    | Annotated[ReasoningItem, Tag("reasoning")],
    Discriminator(_item_type),
]


# ------------------------------------------------------------------------- tools


class FunctionTool(_Item):
    type: Literal["function"]
    name: Annotated[str, Field(pattern=FUNCTION_NAME_PATTERN)]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class NamedFunction(_Item):
    type: Literal["function"]
    name: str


class JsonSchemaText(_Item):
    type: Literal["json_schema"]
    name: Annotated[str, Field(pattern=FUNCTION_NAME_PATTERN)]
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None
    description: str | None = None


class PlainText(_Item):
    type: Literal["text"]


class JsonObjectText(_Item):
    type: Literal["json_object"]


TextFormat = Annotated[PlainText | JsonObjectText | JsonSchemaText, Field(discriminator="type")]


class TextConfig(_Item):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None  # accepted; gpt-oss has none


class Reasoning(_Item):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: Literal["auto", "concise", "detailed", "none"] | None = None  # accepted
    generate_summary: Literal["auto", "concise", "detailed", "none"] | None = None

    def gpt_oss_effort(self) -> Literal["low", "medium", "high"] | None:
        """The nearest gpt-oss level: none/minimal -> low, xhigh -> high."""
        e = self.effort
        if e is None:
            return None
        return "low" if e in ("none", "minimal") else "high" if e == "xhigh" else e  # type: ignore[return-value]


# ------------------------------------------------------------------------ request

# Sent by default by common clients, meaningless on this worker: accepted and ignored.
IGNORED_FIELDS = (
    "prompt_cache_key", "prompt_cache_retention", "service_tier", "safety_identifier",
    "client_metadata", "max_tool_calls", "stream_options",
)
# Known fields this worker cannot honour: a 400 naming them (when set).
STATEFUL_FIELDS = ("previous_response_id", "conversation", "prompt")


class ResponsesRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    model: str | None = None
    input: str | Annotated[list[InputItem], Field(min_length=1)]
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None  # each checked by type in `function_tools`
    tool_choice: Literal["none", "auto", "required"] | NamedFunction | None = None
    parallel_tool_calls: bool | None = None
    reasoning: Reasoning | None = None
    max_output_tokens: Annotated[int, Field(ge=1)] | None = None
    text: TextConfig | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    stream: bool | None = False
    metadata: dict[str, str] | None = None
    include: list[str] | None = None
    store: bool | None = None  # nothing is stored either way
    user: str | None = None
    # Honoured only with the value that asks for nothing (see validate_request).
    background: bool | None = None
    truncation: Literal["auto", "disabled"] | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    previous_response_id: str | None = None
    conversation: str | dict[str, Any] | None = None
    prompt: dict[str, Any] | None = None
    # Accepted and ignored (IGNORED_FIELDS).
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    service_tier: str | None = None
    safety_identifier: str | None = None
    client_metadata: dict[str, Any] | None = None
    max_tool_calls: int | None = None
    stream_options: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _item_types(cls, data: Any) -> Any:
        """Name the item whose type we do not take (pydantic would name only the item)."""
        items = data.get("input") if isinstance(data, dict) else None
        for i, item in enumerate(items if isinstance(items, list) else []):
            kind = _item_type(item)
            if kind not in ITEM_TYPES:
                raise InvalidRequest(
                    f"input item type {kind!r} is not supported; use one of {list(ITEM_TYPES)}"
                    + (" (item_reference needs stored responses: send the item itself)"
                       if kind == "item_reference" else ""),
                    param=f"input[{i}].type" if isinstance(item, dict) and "type" in item
                    else f"input[{i}]")
        return data

    @field_validator("top_p", "temperature", mode="before")
    @classmethod
    def _int_is_a_number(cls, v: Any) -> Any:
        return float(v) if isinstance(v, int) and not isinstance(v, bool) else v

    def items(self) -> list[Any]:
        """The input as a list of items (a string is one user message)."""
        if isinstance(self.input, str):
            return [Message(role="user", content=self.input)]
        return list(self.input)

    def encrypted_reasoning(self) -> bool:
        return ENCRYPTED_REASONING in (self.include or [])

    def effort(self) -> str | None:
        return self.reasoning.gpt_oss_effort() if self.reasoning else None

    def answer_format(self) -> PlainText | JsonObjectText | JsonSchemaText | None:
        return self.text.format if self.text is not None else None
