"""Rules on a parsed Responses request that pydantic cannot see; each raises InvalidRequest
naming the parameter."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from worker.openai.bounds import check_body
from worker.openai.errors import InvalidRequest, validation_error_body
from worker.openai.responses.protocol import (
    IGNORED_TOOL_TYPES,
    STATEFUL_FIELDS,
    FunctionTool,
    Message,
    NamedFunction,
    Refusal,
    ResponsesRequest,
    UnsupportedPart,
)


def function_tools(req: ResponsesRequest) -> list[FunctionTool]:
    """The function tools. Hosted types clients send by default are not offered to the
    model; any other type is a 400 naming it."""
    out: list[FunctionTool] = []
    for i, raw in enumerate(req.tools or []):
        kind = raw.get("type") if isinstance(raw, dict) else None
        if isinstance(kind, str) and kind in IGNORED_TOOL_TYPES:
            continue
        if kind != "function":
            raise InvalidRequest(
                f"tool type {str(kind)[:80]!r} is not supported: gpt-oss calls function tools here "
                f"(types {sorted(IGNORED_TOOL_TYPES)} are accepted and not offered)",
                param=f"tools[{i}].type")
        try:
            out.append(FunctionTool.model_validate(raw))
        except ValidationError as exc:
            body = validation_error_body(exc, prefix=("tools", i))["error"]
            raise InvalidRequest(body["message"], param=body["param"]) from None
    return out


def validate_request(req: ResponsesRequest, tools: list[FunctionTool]) -> None:
    """Rules pydantic cannot see; raises InvalidRequest naming the parameter."""
    for name in STATEFUL_FIELDS:
        if getattr(req, name) is not None:
            raise InvalidRequest(
                f"{name} is not supported: this worker keeps no state between requests; "
                "send the whole conversation in `input`", param=name)
    if req.background:
        raise InvalidRequest("background responses are not supported (nothing is stored); "
                             "use stream: true for long responses", param="background")
    if req.truncation == "auto":
        raise InvalidRequest('truncation "auto" is not supported: the input is never '
                             'truncated; an input over the context is a 400', param="truncation")
    if req.top_logprobs:
        raise InvalidRequest("top_logprobs is not supported on /v1/responses (use "
                             "/v1/chat/completions with logprobs)", param="top_logprobs")
    for i, value in enumerate(req.include or []):
        if value == "message.output_text.logprobs":
            raise InvalidRequest("output logprobs are not supported on /v1/responses",
                                 param=f"include[{i}]")
    names = [t.name for t in tools]
    dup = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if dup is not None:
        raise InvalidRequest(f"duplicate function name {dup!r} in tools", param="tools")
    choice = req.tool_choice
    if isinstance(choice, NamedFunction) and choice.name not in names:
        raise InvalidRequest(f"tool_choice names function {choice.name!r}, which is not in tools",
                             param="tool_choice")
    if choice == "required" and not names:
        raise InvalidRequest('tool_choice "required" needs at least one function tool',
                             param="tool_choice")
    for i, item in enumerate(req.items()):
        if isinstance(item, Message):
            for j, part in enumerate(item.content if isinstance(item.content, list) else []):
                if isinstance(part, UnsupportedPart):
                    raise InvalidRequest(f"gpt-oss is text-only: {part.type} is not supported",
                                         param=f"input[{i}].content[{j}].type")
                if isinstance(part, Refusal) and item.role != "assistant":
                    raise InvalidRequest("refusal parts belong to assistant messages",
                                         param=f"input[{i}].content[{j}].type")


def parse_request(body: Any) -> ResponsesRequest:
    """Validate a Responses body; a bad field raises InvalidRequest whose param names it.
    The bounds every endpoint shares come first (worker.openai.bounds.check_body: lone
    surrogates, NaN, nesting, repeated keys, tokenizer-quadratic runs, named by path)."""
    check_body(body)
    try:
        return ResponsesRequest.model_validate(body)
    except ValidationError as exc:
        err = validation_error_body(_Deepest(exc))["error"]
        raise InvalidRequest(err["message"], param=err["param"]) from None


class _Deepest:
    """A validation error's entries, the deepest location first: `input` is a string or a
    list of items, and a bad item should be named (`input[0].role`), not the string branch."""

    def __init__(self, exc: ValidationError):
        entries = exc.errors(include_url=False, include_input=False)
        self._entries = sorted(entries, key=lambda e: -len(e.get("loc", ())))

    def errors(self, **_: Any) -> list[Any]:
        return self._entries
