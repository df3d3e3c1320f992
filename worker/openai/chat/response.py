"""Our OpenAI chat-completions response models: completion, stream chunk, models, error.

Optional fields are left out of the JSON while None, as OpenAI does, except the
ones clients expect as explicit nulls (`content` of a tool-calling message, a
choice's `finish_reason` and `logprobs`, an error's `param` and `code`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, model_serializer


def _is_none(value: Any) -> bool:
    return value is None


def _omit() -> Any:
    """An optional response field, left out of the output while it is None."""
    return Field(default=None, exclude_if=_is_none)


class _KeepNone(BaseModel):
    """Keeps the `_keep_none` keys as null even under model_dump(exclude_none=True)."""

    _keep_none: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _keep_null_keys(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for key in self._keep_none:
            if key not in data and getattr(self, key) is None:
                data[key] = None
        return data


class ResponseFunctionCall(BaseModel):
    name: str
    arguments: str


class ResponseToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: ResponseFunctionCall


class ResponseMessage(_KeepNone):
    _keep_none = ("content",)
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    reasoning: str | None = _omit()
    reasoning_content: str | None = _omit()
    tool_calls: list[ResponseToolCall] | None = _omit()


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = _omit()


class TokenLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = _omit()
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None = _omit()


FinishReasonOut = Literal["stop", "length", "tool_calls", "content_filter"]


class Choice(_KeepNone):
    _keep_none = ("finish_reason", "logprobs")
    index: int
    message: ResponseMessage
    finish_reason: FinishReasonOut | None = None
    logprobs: ChoiceLogprobs | None = None


class CompletionTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    completion_tokens_details: CompletionTokensDetails | None = _omit()
    prompt_tokens_details: PromptTokensDetails | None = _omit()


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage | None = _omit()
    system_fingerprint: str | None = _omit()


class DeltaFunctionCall(BaseModel):
    name: str | None = _omit()
    arguments: str | None = _omit()


class DeltaToolCall(BaseModel):
    index: int
    id: str | None = _omit()
    type: Literal["function"] | None = _omit()
    function: DeltaFunctionCall | None = _omit()


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = _omit()
    content: str | None = _omit()
    reasoning: str | None = _omit()
    reasoning_content: str | None = _omit()
    tool_calls: list[DeltaToolCall] | None = _omit()


class ChunkChoice(BaseModel):
    index: int
    delta: ChunkDelta
    finish_reason: FinishReasonOut | None = None
    logprobs: ChoiceLogprobs | None = _omit()


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = _omit()
    system_fingerprint: str | None = _omit()


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "openai"
    root: str | None = _omit()
    max_model_len: int | None = _omit()


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(_KeepNone):
    _keep_none = ("param", "code")
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail
